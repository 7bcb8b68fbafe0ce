"""A study's generated CMR clips beside the real ones, as one PNG: for each reference-panel ECG of the chosen
generation round, the real clip (top) and the generated clip (below), every other frame, end-diastole first.

    .venv/bin/python benchmarks/generation_figure.py --db runs/demo-study/study.db --out docs/generated_vs_real.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from rundb.schema import Generation, npy_array
from rundb.url import database_url
from shared_models.cine_media import filmstrip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    with Session(create_engine(database_url(str(args.db)))) as session:
        rows = session.scalars(select(Generation).order_by(Generation.id)).all()
        if not rows:
            raise SystemExit(f"{args.db}: no generated clips (they need a generator round and a reference panel)")
        last = [g for g in rows if (g.phase, g.server_round) == (rows[-1].phase, rows[-1].server_round) and g.real]
        clips = [clip for g in last for clip in (npy_array(g.real), npy_array(g.generated))]
        label = f"{rows[-1].phase} round {rows[-1].server_round}"
        ssim = ", ".join(f"{g.reference}: SSIM {g.ssim:.2f}" for g in last if g.ssim is not None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    filmstrip(clips, every=2, scale=args.scale).save(args.out)
    print(f"wrote {args.out}: real (upper) and generated (lower) rows, {label}; {ssim}")


if __name__ == "__main__":
    main()
