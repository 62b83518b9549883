"""Copy a running training's latest checkpoint and its record into a committed folder.

```
 python -m preedit.training.snapshot runs/bd1 training/candidates/bd1
   runs/bd1/last.pt ─> DEST/last.pt      (full trainer state: `preedit train --resume DEST/last.pt`)
                    ─> DEST/model.pt     (deploy checkpoint: `preedit eval --checkpoint`, `preedit export`)
                    ─> DEST/history.json (per-step logs), DEST/record.json (step, config, data list)
   runs/bd1/{config.json,data_list.json} ─> DEST/
```
The copy is atomic per file (write then rename), so a snapshot taken while the trainer writes
`last.pt` is either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import List

from preedit.errors import UsageError


def snapshot(run: Path, dest: Path) -> dict:
    import torch  # lazy: torch

    from preedit.network import NetConfig, PreEditorNet, save_checkpoint  # lazy: pulls torch

    src = run / "last.pt"
    if not src.is_file():
        raise UsageError(f"no checkpoint to snapshot: {src}")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "last.pt.part"
    shutil.copyfile(src, tmp)
    data = torch.load(tmp, map_location="cpu", weights_only=False)
    tmp.replace(dest / "last.pt")
    net = PreEditorNet(NetConfig.from_dict(data["model"]["config"]))
    net.load_state_dict(data["model"]["state_dict"])
    save_checkpoint(net, dest / "model.pt", step=int(data["step"]), train_config=data["config"], sources=data.get("sources", []))
    (dest / "history.json").write_text(json.dumps(data.get("history", []), indent=0) + "\n")
    for name in ("config.json", "data_list.json"):
        if (run / name).is_file():
            shutil.copyfile(run / name, dest / name)
    record = {"step": int(data["step"]), "bank_sha": data.get("bank_sha"), "rate_cal": data.get("rate_cal"), "run": str(run)}
    (dest / "record.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m preedit.training.snapshot RUN_DIR DEST_DIR", file=sys.stderr)
        return 2

    try:
        rec = snapshot(Path(argv[0]), Path(argv[1]))
    except UsageError as exc:
        print(f"snapshot: {exc}", file=sys.stderr)
        return 2
    print(f"snapshot of step {rec['step']} written to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
