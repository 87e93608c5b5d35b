"""Give a checkpoint's card the post-processing defaults and threshold of another model's card.

For a leave-one-city-out model trained with the bundled default's protocol (`train_aerial.py --test-city
zanzibar`): it is then run, scored and adapted with the default's validated post-processing instead of the bare
training card's (4 m² minimum and nothing else), so its numbers compare with the default's.

    .venv/bin/python scripts/copy_postprocess.py --from aerial-buildings runs/loco-zanzibar/best.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bldgseg.models import load_card

#: Card keys that make up a model's post-processing (read by ``bldgseg run`` when no option overrides them).
KEYS = ("threshold", "min_area_m2", "postprocess")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", default="aerial-buildings", help="model whose values to copy")
    parser.add_argument("checkpoint", type=Path, help="a .safetensors whose .json card is updated in place")
    args = parser.parse_args()
    source = load_card(args.source)[1].to_dict()
    card_path = args.checkpoint.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update({key: source[key] for key in KEYS})
    card.setdefault("notes", "")
    card["notes"] = (card["notes"] + f" Post-processing and threshold copied from {source['name']}.").strip()
    card_path.write_text(json.dumps(card, indent=2))
    print(json.dumps({key: card[key] for key in KEYS}))


if __name__ == "__main__":
    main()
