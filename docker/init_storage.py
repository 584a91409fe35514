#!/usr/bin/env python3
"""Create Optuna's tables in ``$HPO_STORAGE`` once, before the dashboard or a sweep opens the database.

docker-compose.yml runs this as the one-shot ``storage-init`` service, and the dashboard and the sweep
wait for it to finish: two processes creating the schema on an empty PostgreSQL database at once fail
with IntegrityError, and ``hpo dashboard`` never creates it (it would exit on a fresh database). Running
it again is harmless: existing tables are left as they are.

The URL comes from the environment only, so the password never appears on a command line; every
message masks it. Exit codes: 0 ready, 1 the database could not be reached in time, 2 no URL.
"""

from __future__ import annotations

import os
import sys
import time

from storage import StorageError, close_storage, mask_url, open_storage

STORAGE_ENV = "HPO_STORAGE"
WAIT_ENV = "HPO_STORAGE_WAIT_S"  # how long to keep retrying an unreachable database


def main() -> int:
    url = os.environ.get(STORAGE_ENV, "").strip()
    if not url:
        print(f"error: {STORAGE_ENV} is not set", file=sys.stderr)
        return 2
    deadline = time.monotonic() + float(os.environ.get(WAIT_ENV, "60"))
    while True:
        try:
            storage = open_storage(url, create_schema=True)
            break
        except StorageError as e:  # messages from storage are already masked
            if time.monotonic() >= deadline:
                print(f"error: {e}", file=sys.stderr)
                return 1
            print(f"waiting for the database: {e}", file=sys.stderr)
            time.sleep(2)
    close_storage(storage)
    print(f"storage ready: {mask_url(url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
