# Two commands matter: `make demo` and `make test`. Both work on a fresh Debian machine.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_REPO := feature_repo
PROTOS := $(wildcard proto/featurestore/v1/*.proto)

.PHONY: install proto redis test lint demo bench clean

# Installing also generates featurestore/serving/_proto/ from proto/ (generated code is built,
# never committed), and a changed .proto makes the next `make test` or `make demo` regenerate.
$(VENV)/.installed: pyproject.toml $(PROTOS)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) featurestore/serving/codegen.py
	touch $@

install: $(VENV)/.installed

proto: install
	$(PY) featurestore/serving/codegen.py

# The online store's tests and `online_store: managed` need a local redis-server.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server (Debian package)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

lint: install
	$(VENV)/bin/ruff check featurestore tests benchmarks feature_repo

test: install redis lint
	$(VENV)/bin/pytest -q

demo: install
	$(PY) $(DEMO_REPO)/datagen/generate.py --out $(DEMO_REPO)/data
	$(VENV)/bin/featurestore apply --repo $(DEMO_REPO)
	$(PY) $(DEMO_REPO)/datagen/labels.py --repo $(DEMO_REPO) --out $(DEMO_REPO)/data/labels.parquet
	$(VENV)/bin/featurestore training-set $(DEMO_REPO)/data/labels.parquet \
		-o $(DEMO_REPO)/data/training_set.parquet --service fraud_v1 --repo $(DEMO_REPO)
	$(VENV)/bin/featurestore sql --repo $(DEMO_REPO) \
		"SELECT is_foreign, count(*) AS labels, round(avg(is_fraud::INT), 4) AS fraud_rate, \
		round(avg(amount_to_limit(amount, credit_limit)), 4) AS avg_amount_to_limit \
		FROM read_parquet('$(DEMO_REPO)/data/training_set.parquet') GROUP BY ALL ORDER BY ALL"

bench: install
	$(PY) benchmarks/training_set.py

clean:
	rm -rf $(VENV) $(DEMO_REPO)/data $(DEMO_REPO)/.featurestore featurestore/serving/_proto
