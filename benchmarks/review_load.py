"""Review app under load: 20 simulated reviewers claim and decide for 60 s through the real HTTP app.

The app runs as it does in production (uvicorn, one process) on loopback against a SQLite review store
and a local object store under a temporary folder; each simulated reviewer logs in, claims batches,
opens every item (task JSON and its composite rendition) and decides it (approve / reject, and every
10th item a corrected mask painted on the preview), retrying under the same idempotency key on a
network error. Afterwards every acknowledged decision is looked up in the store.

Prints p50 / p99 latency per action and the counts; writes ``$HITL_HOME/bench/review_load.json``
(keys ``actions``, ``p50_ms``, ``p99_ms``, ``lost``, ``duplicated``, ``store``, plus context).
Exit status 1 if a decision was lost or duplicated.

    .venv/bin/python benchmarks/review_load.py [--seconds 60] [--reviewers 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hitl_assets.review_app.process import app_env, free_port, start_app  # noqa: E402
from hitl_assets.review_app.simulate import Ledger, ReviewerPool, prepare_home, verify  # noqa: E402

PASSWORD = "simulated-reviewer-password"
ACTIONS = ("login", "claim", "task", "image", "decide", "correct")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the reviewers work (default 60)")
    parser.add_argument("--reviewers", type=int, default=20, help="concurrent simulated reviewers (default 20)")
    parser.add_argument("--tasks", type=int, default=0, help="review tasks seeded (default: enough never to run dry)")
    parser.add_argument("--out", default="", help="JSON output (default $HITL_HOME/bench/review_load.json)")
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve() / "bench" / "review_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks or max(2000, int(args.seconds * 150))
    with tempfile.TemporaryDirectory(prefix="hitl-review-load-") as tmp:
        home = Path(tmp) / "home"
        setup = prepare_home(home, args.reviewers, tasks, PASSWORD, batch_size=10, width=1024, height=768)
        port = free_port()
        process = start_app(app_env(home, "review-load-benchmark-secret-0123456789", HITL_POLICY=setup["policy"]), port, Path(tmp) / "app.log")
        ledger = Ledger()
        try:
            pool = ReviewerPool(f"http://127.0.0.1:{port}", setup["names"], PASSWORD, ledger, correct_every=10).start()
            started = time.monotonic()
            time.sleep(args.seconds)
            pool.stop()
            elapsed = time.monotonic() - started
        finally:
            process.terminate()
            process.wait(timeout=30)
        figures = verify(setup["store"], ledger)
        store_description = setup["store"].describe()
    summary = ledger.summary()
    decisions = figures["acknowledged"]
    result = {
        "actions": {a: summary[a]["count"] for a in ACTIONS if a in summary},
        "p50_ms": {a: summary[a]["p50_ms"] for a in ACTIONS if a in summary},
        "p99_ms": {a: summary[a]["p99_ms"] for a in ACTIONS if a in summary},
        "lost": figures["lost"],
        "duplicated": figures["duplicated"],
        "store": store_description.split(":", 1)[0],  # "sqlite": the embedded default review store
        "store_detail": "SQLite file (WAL) in a temporary folder, local object store; app: uvicorn, 1 process, loopback",
        "reviewers": args.reviewers,
        "seconds": round(elapsed, 1),
        "decisions": decisions,
        "decisions_per_second": round(decisions / elapsed, 2) if elapsed else 0.0,
        "stored_events": figures["stored"],
        "http_errors": {k: v for k, v in ledger.errors.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"review app, {args.reviewers} simulated reviewers for {elapsed:.0f} s, SQLite review store, uvicorn on loopback")
    print(f"{'action':<10}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for action in ACTIONS:
        if action in summary:
            row = summary[action]
            print(f"{action:<10}{row['count']:>8}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}")
    print(f"decisions acknowledged {decisions} ({result['decisions_per_second']}/s), stored {figures['stored']}, "
          f"lost {figures['lost']}, duplicated {figures['duplicated']}")
    if result["http_errors"]:
        print(f"HTTP errors: {result['http_errors']}")
    print(f"wrote {out}")
    return 0 if figures["lost"] == 0 and figures["duplicated"] == 0 and figures["stored"] == decisions else 1


if __name__ == "__main__":
    sys.exit(main())
