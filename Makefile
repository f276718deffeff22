# Two commands matter: `make demo` and `make test`. Both work on a fresh Debian machine.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_REPO := feature_repo
PROTOS := $(wildcard proto/featurestore/v1/*.proto)

.PHONY: install proto redis chromium java test lint demo catalog-screenshot bench mutate clean

# Installing also generates featurestore/serving/_proto/ from proto/ (generated code is built,
# never committed), and a changed .proto makes the next `make test` or `make demo` regenerate.
$(VENV)/.installed: pyproject.toml $(PROTOS)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,feast,spark]'
	$(PY) featurestore/serving/codegen.py
	touch $@

install: $(VENV)/.installed

proto: install
	$(PY) featurestore/serving/codegen.py

# The online store's tests and `online_store: managed` need a local redis-server; the Redis
# Cluster tests also redis-cli (Debian's redis-tools) to create their cluster.
redis:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || { \
		echo "installing redis-server and redis-tools (Debian packages)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server \
			redis-tools >/dev/null; }

# The catalog page's tests look at it in a real browser: Debian's chromium, headless.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (Debian package)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The Spark offline engine's tests run a local Spark, which needs Java 17+: Debian's JRE.
java:
	@command -v java >/dev/null 2>&1 || { \
		echo "installing openjdk-17-jre-headless (Debian package)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }

lint: install
	$(VENV)/bin/ruff check featurestore tests benchmarks feature_repo

# Two pytest processes (one test file each at a time): most tests wait on servers and
# subprocesses, so two keep both cores busy and the suite takes about 8 minutes, not 13.
test: install redis chromium java lint
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

# The standing mutation check (not part of `make test`): semantic mutations of the hot spots,
# each run against the tests that must kill it; exits 1 when one survives.
mutate: install redis
	$(PY) tests/mutation/run.py

DEMO_END := 2025-07-01T00:00:00Z
DEMO_PORT := 6566
DEMO_SOCKET := $(DEMO_REPO)/.featurestore/redis/redis.sock

# Offline: data, apply, a training set and SQL (which reads only the store's objects, so its
# labels are the transactions source). Online: materialize into the repo's managed
# redis-server, serve, ask for a feature vector, check parity; then stop all it started.
demo: install redis
	rm -rf $(DEMO_REPO)/pushed $(DEMO_REPO)/.featurestore/redis  # earlier demos' pushes and online store
	$(PY) $(DEMO_REPO)/datagen/generate.py --out $(DEMO_REPO)/data --end $(DEMO_END)
	$(VENV)/bin/featurestore apply --repo $(DEMO_REPO)
	$(PY) $(DEMO_REPO)/datagen/labels.py --repo $(DEMO_REPO) --out $(DEMO_REPO)/data/labels.parquet
	$(VENV)/bin/featurestore training-set $(DEMO_REPO)/data/labels.parquet \
		-o $(DEMO_REPO)/data/training_set.parquet --service fraud_v1 --repo $(DEMO_REPO)
	$(VENV)/bin/featurestore sql --repo $(DEMO_REPO) \
		"CREATE TEMP VIEW labels AS SELECT user_id, event_ts AS event_timestamp, amount, \
		        country AS txn_country, is_fraud FROM sources.transactions; \
		 SELECT is_foreign(txn_country, country) AS is_foreign, count(*) AS n, \
		        round(avg(is_fraud::INT), 4) AS fraud_rate, \
		        round(avg(amount_to_limit(amount, credit_limit)), 4) AS avg_amount_to_limit \
		 FROM features.user_profile_asof('labels') GROUP BY 1 ORDER BY 1"
	$(VENV)/bin/featurestore materialize --repo $(DEMO_REPO) --end $(DEMO_END)
	@set -e; \
	$(VENV)/bin/featurestore serve --repo $(DEMO_REPO) --port $(DEMO_PORT) & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null; \
	      redis-cli -s $(DEMO_SOCKET) shutdown >/dev/null 2>&1 || true' EXIT; \
	tries=0; until $(VENV)/bin/featurestore get --service fraud_v1 --entity user_id=1 \
		--entity merchant_id=M00001 --request amount=1 --request txn_country=US \
		--request txn_ts=$(DEMO_END) --target 127.0.0.1:$(DEMO_PORT) >/dev/null 2>&1; do \
		tries=$$((tries + 1)); [ $$tries -lt 120 ] || { echo "server did not start"; exit 1; }; \
		sleep 0.5; done; \
	$(VENV)/bin/featurestore get --service fraud_v1 --entity user_id=1,2 \
		--entity merchant_id=M00001,M00002 --request amount=9.5,120 \
		--request txn_country=US,FR --request txn_ts=$(DEMO_END),$(DEMO_END) \
		--as-of $(DEMO_END) --target 127.0.0.1:$(DEMO_PORT); \
	$(VENV)/bin/featurestore parity --service fraud_v1 --sample 500 --repo $(DEMO_REPO) \
		--target 127.0.0.1:$(DEMO_PORT); \
	$(PY) $(DEMO_REPO)/datagen/fresh.py --out $(DEMO_REPO)/data/fresh.parquet --user 1; \
	$(VENV)/bin/featurestore push transactions $(DEMO_REPO)/data/fresh.parquet \
		--repo $(DEMO_REPO) --server 127.0.0.1:$(DEMO_PORT); \
	$(VENV)/bin/featurestore get --features user_spend --entity user_id=1 \
		--target 127.0.0.1:$(DEMO_PORT)

CATALOG_PORT := 8766

# The README's picture of `featurestore ui`: the demo repo's catalog (run `make demo` first: it
# applies, materializes and pushes), with the repo's managed redis-server started for freshness.
catalog-screenshot: install chromium
	@test -f $(DEMO_REPO)/data/offline.duckdb || { echo "run make demo first"; exit 1; }
	@set -e; \
	$(VENV)/bin/featurestore redis start --repo $(DEMO_REPO) >/dev/null; \
	$(VENV)/bin/featurestore ui --repo $(DEMO_REPO) --port $(CATALOG_PORT) & ui=$$!; \
	profile=$$(mktemp -d); \
	trap 'kill $$ui 2>/dev/null || true; wait $$ui 2>/dev/null || true; rm -rf $$profile; \
	      $(VENV)/bin/featurestore redis stop --repo $(DEMO_REPO) >/dev/null' EXIT; \
	tries=0; until $(PY) -c "import urllib.request as u; \
		u.urlopen('http://127.0.0.1:$(CATALOG_PORT)/', timeout=30)" 2>/dev/null; do \
		tries=$$((tries + 1)); [ $$tries -lt 60 ] || { echo "ui did not start"; exit 1; }; \
		sleep 0.5; done; \
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
		--user-data-dir=$$profile --window-size=1400,2600 --screenshot=docs/catalog.png \
		http://127.0.0.1:$(CATALOG_PORT)/ 2>/dev/null

bench: install redis
	$(PY) benchmarks/training_set.py --out benchmarks/results/training_set.json
	$(PY) benchmarks/online.py --out benchmarks/results/online.json
	$(PY) benchmarks/windows.py --out benchmarks/results/windows.json

clean:
	rm -rf $(VENV) $(DEMO_REPO)/data $(DEMO_REPO)/.featurestore featurestore/serving/_proto
