"""Writes a few card authorizations that happen *now* for one cardholder, for the demo's
streaming push: `featurestore push transactions fresh.parquet` then shows them in the
cardholder's windowed features (user_spend) at once, while the example data ends in 2025.

    python feature_repo/datagen/fresh.py --out fresh.parquet [--user 1]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--user", type=int, default=1)
    args = parser.parse_args()
    now = datetime.fromtimestamp(time.time(), UTC)
    pl.DataFrame({
        "user_id": [args.user] * 3,
        "merchant_id": ["M00001", "M00002", "M00002"],
        "amount": [25.0, 480.0, 510.0],
        "event_ts": [now - timedelta(minutes=m) for m in (50, 3, 1)],
    }, schema_overrides={"event_ts": pl.Datetime("us", "UTC")}).write_parquet(args.out)
    print(f"wrote 3 transactions of user {args.user} at {now:%Y-%m-%d %H:%M} UTC to {args.out}")


if __name__ == "__main__":
    main()
