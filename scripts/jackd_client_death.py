"""Does a private jackd survive JACK clients that die without closing their ports?

    python scripts/jackd_client_death.py kill 50 [--sync]        # SIGKILL at a random instant
    python scripts/jackd_client_death.py close_exit 300 [--sync] # _exit partway through closing
    python scripts/jackd_client_death.py close 200 [--sync]      # a clean close, for comparison

Each round starts a client process (rtmidi, an input and an output port, as livegen opens them),
lets it end the chosen way, then checks that a new client can still open within 30 s.  Prints
``ok N`` or the round at which jackd stopped taking clients, with jackd's log (README,
Troubleshooting, has the figures).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time


def client(how: str, delay: float) -> None:
    import rtmidi

    name = f"death{os.getpid()}"
    inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=name)
    inp.open_virtual_port("in")
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=name)
    out.open_virtual_port("out")
    for _ in range(20):
        out.send_message([0x90, 60, 90])
        out.send_message([0x80, 60, 0])
    time.sleep(0.05)

    def close() -> None:
        inp.close_port()
        inp.delete()
        out.close_port()
        out.delete()

    if how == "close_exit":
        threading.Thread(target=close, daemon=True).start()
        time.sleep(delay)
    elif how == "kill":
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        close()
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("how", choices=("kill", "close_exit", "close"))
    parser.add_argument("rounds", type=int)
    parser.add_argument("--sync", action="store_true", help="jackd -S (as the test suite runs it)")
    parser.add_argument("--client", type=float, metavar="DELAY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        client(args.how, args.client)
    from livegen.bench.jack import _client_can_connect, jack_server

    rng = random.Random(1)
    with jack_server(prefix="death", sync=args.sync) as server:
        for index in range(args.rounds):
            delay = rng.random() * 0.03
            subprocess.run([sys.executable, __file__, args.how, "0", "--client", str(delay)], env=server.env,
                           timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                alive = _client_can_connect(server.env)
            except subprocess.TimeoutExpired:
                alive = False
            if not alive:
                said = [line for line in server.log().splitlines() if not line.startswith("JackTimedDriver::Process XRun")]
                print(f"{args.how}: jackd stopped taking clients after round {index + 1} (delay {delay:.4f} s)")
                print("\n".join(said[-20:]))
                return 1
    print(f"{args.how}: ok {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
