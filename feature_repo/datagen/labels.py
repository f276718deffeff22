"""Builds the labels of the card-fraud model from the repo's transactions source: one row per
sampled transaction with its entity keys, the transaction time as the as-of time
(event_timestamp), the request inputs the transforms need, and whether it turned out to be
fraud (is_fraud).

Why a separate step: labels are what a scientist brings to `featurestore training-set`; the
feature store never produces them. The transactions file is found through the repo's own
`transactions` Source, so this script and the definitions cannot disagree on where it is.

    python feature_repo/datagen/labels.py --repo feature_repo --out labels.parquet [--n N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from featurestore.repo import load_repo


def transactions_path(repo: Path) -> Path:
    config, defs = load_repo(repo)
    source = defs.sources["transactions"]
    assert source.path is not None, "the transactions source is a file"
    path = Path(source.path)
    return path if path.is_absolute() else config.root / path


def labels(transactions: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A uniform sample of n transactions (all when n is larger), kept in time order."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(transactions.height, min(n, transactions.height), replace=False))
    return transactions[rows].select(
        "user_id", "merchant_id",
        pl.col("event_ts").dt.convert_time_zone("UTC").alias("event_timestamp"),
        "amount",
        pl.col("country").alias("txn_country"),
        pl.col("event_ts").dt.convert_time_zone("UTC").alias("txn_ts"),
        "is_fraud",
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="the feature repo folder")
    parser.add_argument("--out", type=Path, required=True, help="labels Parquet file to write")
    parser.add_argument("--n", type=int, default=20_000, help="number of labels to sample")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    source = transactions_path(args.repo)
    frame = labels(pl.read_parquet(source), args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(args.out)
    fraud = int(frame["is_fraud"].sum())
    print(f"wrote {args.out}: {frame.height:,} labels from {source.name}, {fraud:,} fraudulent "
          f"({fraud / frame.height:.2%}), columns {', '.join(frame.columns)}")


if __name__ == "__main__":
    main()
