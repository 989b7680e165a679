"""A step that runs until stopped, for launcher tests: writes `started`, and on SIGTERM/SIGUSR2 writes `saved`
and exits with the preemption code, as a training step would after saving its checkpoint."""
import os
import signal
import sys
import time

from shared.launch import PREEMPTED_EXIT_CODE

out = sys.argv[1]
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 300


def stop(signum, frame):
    with open(os.path.join(out, "saved"), "a") as f:
        f.write(f"{signal.Signals(signum).name}\n")
    sys.exit(PREEMPTED_EXIT_CODE)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGUSR2, stop)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "started"), "a") as f:
    f.write(f"{os.environ.get('SLURM_JOB_ID', '')}\n")
time.sleep(seconds)
with open(os.path.join(out, "finished"), "w") as f:
    f.write("ok\n")
