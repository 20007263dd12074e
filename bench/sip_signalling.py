"""SIP signalling throughput of the user agent, driven by sipp at a fixed call rate.

    .venv/bin/python bench/sip_signalling.py [--rates 50,100] [--duration-s 20]

For each rate the script starts a ``SipUserAgent`` in a process of its own (``serve``, so that
sipp and the agent each have a core of a 2-core machine) with the fake engines: a scripted
brain, the tone synthesiser and a recogniser that hears nothing (recognition off), so what is
measured is SIP, RTP and the call loop, not speech. sipp then places ``rate`` calls a second
for ``duration`` seconds, each: INVITE, 100/180/200 (with SDP), ACK, 1 s of call (the agent
greets and sends RTP), BYE, 200.

It prints, per rate: call set-ups per second achieved, failed calls, sipp's retransmissions
(it retransmits an INVITE unanswered for 500 ms), the INVITE -> 200 latency (p50, p95, p99,
max, from sipp's ``-trace_rtt``), and from the agent: calls answered and ended, CPU time over
the run, and the worst event-loop lag (a 10 ms ticker's lateness: anything blocking the loop
shows there). sipp measures the latency on its own clock, which advances once per turn of its
main loop, so its figures have a resolution of a few milliseconds. Run it on an otherwise idle
machine; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voice.asr.fake import FakeRecognizer  # noqa: E402
from voice.call.settings import CallEngines, CallSettings  # noqa: E402
from voice.fake_brain import FakeBrain  # noqa: E402
from voice.sip.agent import SipUserAgent  # noqa: E402
from voice.sip.settings import SipSettings  # noqa: E402
from voice.tts.fake import FakeSynthesizer  # noqa: E402

LOOPBACK = "127.0.0.1"
CALL_HOLD_MS = 1000
LAG_TICK_S = 0.01
SCENARIO = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="short call">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{CALL_HOLD_MS}"/>
  <send retrans="500">
    <![CDATA[

      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


# --- The agent's process --------------------------------------------------------------------


async def serve(port: int, max_calls: int) -> None:
    """Run the agent until SIGTERM, then print its figures as one JSON line."""
    engines = CallEngines(
        FakeBrain(), FakeSynthesizer(), lambda language: FakeRecognizer(), CallSettings()
    )
    settings = SipSettings(host=LOOPBACK, port=port, max_calls=max_calls)
    agent = await SipUserAgent.start(settings, engines)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    lags: list[float] = []

    async def measure_lag() -> None:
        while True:
            planned = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            lags.append(loop.time() - planned)

    # As `triage serve` does: what lives as long as the process is put out of the garbage
    # collector's reach, so that a full collection walks only the calls in progress.
    gc.collect()
    gc.freeze()
    ticker = asyncio.create_task(measure_lag())
    started = time.monotonic()
    cpu_started = _cpu_s()
    print(f"ready {agent.local_address[1]}", flush=True)
    await stop.wait()
    wall_s = time.monotonic() - started
    cpu_s = _cpu_s() - cpu_started
    # sipp exits on the 200 to its last BYE; the agent may still be closing that call's media.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agent.wait_for(lambda s: s.active_calls == 0), 5)
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    stats = agent.stats
    await agent.close()
    lags.sort()
    print(
        json.dumps(
            {
                "calls_started": stats.calls_started,
                "calls_ended": stats.calls_ended,
                "end_reasons": dict(stats.end_reasons),
                "rejected": dict(stats.rejected),
                "ack_timeouts": stats.ack_timeouts,
                "retransmissions_absorbed": stats.retransmissions_absorbed,
                "cpu_s": round(cpu_s, 2),
                "wall_s": round(wall_s, 2),
                "loop_lag_p99_ms": round(_percentile(lags, 0.99) * 1000, 2),
                "loop_lag_max_ms": round(lags[-1] * 1000, 2) if lags else 0.0,
            }
        ),
        flush=True,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(fraction * len(values)))]


# --- The driver -----------------------------------------------------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


async def measure(rate: int, duration_s: int, sipp: str, workdir: Path) -> dict[str, Any]:
    calls = rate * duration_s
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "serve",
        "--port",
        str(_free_udp_port()),
        "--max-calls",
        str(max(50, rate * 4)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert agent.stdout is not None
        ready = await asyncio.wait_for(agent.stdout.readline(), 30)
        port = int(ready.split()[1])
        scenario = workdir / "short_call.xml"
        scenario.write_text(SCENARIO)
        prefix = workdir / f"rate{rate}"
        command = [
            sipp,
            "-sf", str(scenario),
            "-i", LOOPBACK,
            "-p", str(_free_udp_port()),
            "-mi", LOOPBACK,
            "-mp", str(_free_udp_port()),
            "-s", "100",
            "-r", str(rate),
            "-m", str(calls),
            "-l", str(rate * 10),
            "-timeout", f"{duration_s * 3 + 30}s",
            "-nostdin",
            "-trace_stat", "-stf", f"{prefix}_stat.csv", "-fd", "1",
            "-trace_rtt", "-rtt_freq", "1", "-stat_delimiter", ";",
            "-trace_err", "-error_file", f"{prefix}_errors.log",
            f"{LOOPBACK}:{port}",
        ]  # fmt: skip
        print("  $ " + " ".join([*command[:-1], f"{LOOPBACK}:<agent port>"]), flush=True)
        began = time.monotonic()
        driver = await asyncio.create_subprocess_exec(
            *command,
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        returncode = await asyncio.wait_for(driver.wait(), duration_s * 3 + 60)
        elapsed_s = time.monotonic() - began
        agent.send_signal(signal.SIGTERM)
        report = await asyncio.wait_for(agent.stdout.readline(), 30)
        await asyncio.wait_for(agent.wait(), 30)
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
    sipp_stats = _last_row(Path(f"{prefix}_stat.csv"))
    latencies = sorted(_rtts(workdir))
    successful = int(sipp_stats.get("SuccessfulCall(C)", 0))
    return {
        "rate": rate,
        "calls": calls,
        "sipp_exit": returncode,
        "successful": successful,
        "failed": int(sipp_stats.get("FailedCall(C)", 0)),
        "retransmissions": int(sipp_stats.get("Retransmissions(C)", 0)),
        # calls are placed over duration_s and each lasts CALL_HOLD_MS more
        "setups_per_s": successful / max(elapsed_s - CALL_HOLD_MS / 1000, 1e-9),
        "latency_ms": {
            "p50": _percentile(latencies, 0.50),
            "p95": _percentile(latencies, 0.95),
            "p99": _percentile(latencies, 0.99),
            "max": latencies[-1] if latencies else 0.0,
        },
        "agent": json.loads(report),
    }


def _last_row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    return rows[-1] if rows else {}


def _rtts(workdir: Path) -> list[float]:
    values: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                with contextlib.suppress(KeyError, ValueError):
                    values.append(float(row["response_time_ms"]))
        path.unlink()  # one file per sipp run: the next rate starts empty
    return values


def _print(result: dict[str, Any]) -> None:
    latency = result["latency_ms"]
    agent = result["agent"]
    cpu_share = 100 * agent["cpu_s"] / agent["wall_s"] if agent["wall_s"] else 0.0
    print(
        f"  {result['rate']} calls/s x {result['calls'] // result['rate']} s: "
        f"{result['successful']}/{result['calls']} calls ok, {result['failed']} failed "
        f"(sipp exit {result['sipp_exit']}), {result['retransmissions']} retransmissions; "
        f"{result['setups_per_s']:.1f} set-ups/s\n"
        f"  INVITE -> 200: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, "
        f"p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms\n"
        f"  agent: {agent['calls_started']} answered, {agent['calls_ended']} ended "
        f"{agent['end_reasons']}, rejected {agent['rejected']}, "
        f"{agent['ack_timeouts']} ACK time-outs; CPU {agent['cpu_s']} s in {agent['wall_s']} s "
        f"({cpu_share:.0f}% of a core); event-loop lag p99 {agent['loop_lag_p99_ms']} ms, "
        f"max {agent['loop_lag_max_ms']} ms",
        flush=True,
    )


async def drive(rates: list[int], duration_s: int) -> int:
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 1
    print(
        f"SIP signalling: sipp -> SipUserAgent (own process), {os.cpu_count()} cores, "
        f"calls of {CALL_HOLD_MS} ms, fake engines (recognition off)",
        flush=True,
    )
    failed = False
    for rate in rates:
        with tempfile.TemporaryDirectory(prefix="sip-bench-") as directory:
            result = await measure(rate, duration_s, sipp, Path(directory))
        _print(result)
        failed |= result["failed"] > 0 or result["successful"] < result["calls"]
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve", help="run the agent (the benchmark starts this itself)")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--max-calls", type=int, default=400)
    parser.add_argument("--rates", default="50,100", help="calls per second, comma-separated")
    parser.add_argument("--duration-s", type=int, default=20)
    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve(args.port, args.max_calls))
        return 0
    rates = [int(rate) for rate in args.rates.split(",")]
    return asyncio.run(drive(rates, args.duration_s))


if __name__ == "__main__":
    sys.exit(main())
