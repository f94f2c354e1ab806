"""Time inbox_sensor ticks over a large inbox (default 5,000 files in 50 unit folders).

Runs the real sensor (Dagster's build_sensor_context, a temporary instance, real files):
tick 1 sees every file for the first time (nothing queued: files must hold still a tick),
tick 2 queues the first capped batch (hashing only those), ticks 3+ are the steady state of a
backlog. Target: a tick within 1–2 s (the sensor's gRPC timeout is 60 s).

    python bench/sensor_tick.py [--files 5000] [--units 50] [--size 4096] [--ticks 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--units", type=int, default=50)
    ap.add_argument("--size", type=int, default=4096, help="bytes per file")
    ap.add_argument("--ticks", type=int, default=4)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["INSERVICE_HOME"] = str(home)
        import dagster as dg

        from inservice.assets.shared import InserviceResource
        from inservice.pipelines.definitions import defs

        t0 = time.perf_counter()
        payload = os.urandom(args.size)
        for i in range(args.files):
            unit = f"U{i % args.units:03d}A"
            folder = home / "inbox" / unit
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{unit}_{2013 + (i // 12) % 12}{i % 12 + 1:02d}_{i // args.units + 1}.xlsx").write_bytes(
                payload + i.to_bytes(4, "big"))
        (home / "inbox" / "_corrections").mkdir()
        print(f"{args.files} files in {args.units} unit folders ({args.size} B each) written in "
              f"{time.perf_counter() - t0:.1f} s")
        sensor = defs.resolve_sensor_def("inbox_sensor")
        (Path(tmp) / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(Path(tmp) / "dagster")) as instance:
            cursor = None
            for tick in range(1, args.ticks + 1):
                ctx = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                              resources={"inservice": InserviceResource()}, definitions=defs)
                t = time.perf_counter()
                result = sensor.evaluate_tick(ctx)
                elapsed = time.perf_counter() - t
                cursor = result.cursor
                for req in result.dynamic_partitions_requests or []:  # as the daemon would
                    instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
                print(f"tick {tick}: {elapsed:.3f} s, {len(result.run_requests)} run request(s), "
                      f"cursor {len(cursor or '') / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
