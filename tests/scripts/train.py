"""A user's own training program for shell-task sweeps: argparse flags in, metrics.json out."""

import argparse
import json
import sys
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, required=True)
ap.add_argument("--width", type=int, default=4)
ap.add_argument("--out", type=Path, required=True)
ap.add_argument("--fail", choices=["true", "false"], default="false")
ap.add_argument("--tag")
a = ap.parse_args()
if a.tag is not None:
    print(f"tag: {a.tag}")
print(f"training with lr={a.lr} width={a.width}")
if a.fail == "true":
    print(f"diverged at lr={a.lr}", file=sys.stderr)
    sys.exit(3)
score = -((a.lr - 0.03) ** 2) * 1e4
(a.out / "metrics.json").write_text(json.dumps({"score": score, "params": 10 * a.width}))
