"""``python -m dspex.pool._boot``: start a pool worker or fork-server template.

A separate entry module keeps :mod:`dspex.pool.worker` imported once under its real name, so
handler code calling ``dspex.pool.worker.current_call()`` sees the running call.
"""

from dspex.pool.worker import main

if __name__ == "__main__":
    main()
