"""`python -m harness power`: which power source this host would use for a device, and a short sample."""
from __future__ import annotations

import argparse
import time
from typing import Any

#: "No power source on this host" is an answer (with each source's reason), not a failure: exit 0.
#: Only --require turns it into exit status 1, for scripts that must have a working source.
EXIT_OK, EXIT_NO_SOURCE = 0, 1


def parse_source_option(text: str) -> tuple[str, str, Any]:
    """``SOURCE.KEY=VALUE`` (e.g. ``hwmon.root=/sys/class/hwmon``, ``ina3221.rails=VDD_IN,VDD_SOC``)."""
    head, sep, value = text.partition("=")
    source, dot, key = head.partition(".")
    if not sep or not dot or not source or not key:
        raise argparse.ArgumentTypeError(f"expected SOURCE.KEY=VALUE, got {text!r}")
    parsed: Any = value
    if key == "rails" or key == "command":
        parsed = tuple(v for v in value.split(",") if v)
    elif value.isdigit():
        parsed = int(value)
    return source, key, parsed


def add_subparser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "power", help="show which power source a device would use on this host, and sample it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Probe the device profile's power sources in order (RAPL, hwmon/INA3221, NVML, jtop,\n"
                    "tegrastats, USB meter), say why each one that cannot work here was refused, and sample\n"
                    "the first working one for a few seconds. Exit status 0 when it explains that no source\n"
                    "works (that is an answer); 1 only with --require.",
        epilog="examples:\n"
               "  python -m harness power --device cpu\n"
               "  python -m harness power --device jetson_orin_nano --seconds 5 --period-ms 20\n"
               "  python -m harness power --device rk3588 --usb-port /dev/ttyUSB0 --usb-protocol um25c\n"
               "  python -m harness power --device jetson_orin --option ina3221.rails=VDD_GPU_SOC,VDD_CPU_CV\n")
    p.add_argument("--device", default="cpu", help="device profile name or .toml path (default: cpu)")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to sample the chosen source (default: 3)")
    p.add_argument("--period-ms", type=float, default=10.0, help="sampler period in ms (default: 10)")
    p.add_argument("--sources", default=None, metavar="A,B",
                   help="try these sources in this order instead of the profile's list")
    p.add_argument("--usb-port", default=None, help="serial port of a USB power meter (e.g. /dev/ttyUSB0)")
    p.add_argument("--usb-protocol", default=None, help="USB meter protocol (text, um25c)")
    p.add_argument("--option", action="append", type=parse_source_option, default=[], metavar="SOURCE.KEY=VALUE",
                   help="a source option, e.g. hwmon.root=PATH, rapl.root=PATH, nvml.index=1 (repeatable)")
    p.add_argument("--require", action="store_true",
                   help="exit with status 1 when no source works (for scripts that need power figures)")
    p.set_defaults(func=run_power)


def run_power(args: argparse.Namespace) -> int:
    from devices.loader import load_device
    from harness.power.monitor import SampledPowerMonitor, probe_sources

    if not args.period_ms > 0:
        raise ValueError(f"--period-ms must be positive, got {args.period_ms}")
    device = load_device(args.device)
    names = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else list(device.power_sources)
    options: dict[str, dict[str, Any]] = {}
    if args.usb_port:
        options.setdefault("usb_meter", {})["port"] = args.usb_port
    if args.usb_protocol:
        options.setdefault("usb_meter", {})["protocol"] = args.usb_protocol
    for source, key, value in args.option:
        options.setdefault(source, {})[key] = value

    print(f"device {device.name} ({device.display_name}): power sources in order: {', '.join(names)}")
    chosen, report = probe_sources(names, args.period_ms, source_options=options, stop_at_first=False)
    for name, why in report:
        if why is None:
            mark = "USE " if chosen is not None and chosen.name == name else "ok  "
            print(f"  {mark}{name}")
        else:
            print(f"  no  {name}: {why}")
    if chosen is None:
        print("no power source works on this host: power fields will be empty with these reasons"
              + (f" (or estimated from the profile's typical power with --power-estimate)"
                 if device.typical_power_w or device.typical_power_w_range else ""))
        return EXIT_NO_SOURCE if getattr(args, "require", False) else EXIT_OK

    monitor = SampledPowerMonitor(chosen, args.period_ms)
    print(f"sampling {monitor.source_name} every {args.period_ms:g} ms for {args.seconds:g} s ...")
    try:
        monitor.start()
        t0 = time.perf_counter()
        time.sleep(max(0.0, args.seconds))
        monitor.stop()
        elapsed = time.perf_counter() - t0
        fields = monitor.summarize([1], [elapsed])
    finally:
        monitor.close()

    def fmt(v: Any, unit: str) -> str:
        return "—" if v is None else f"{v:.3f} {unit}"

    print(f"  average {fmt(fields['power_avg_w'], 'W')}   peak {fmt(fields['power_peak_w'], 'W')}   "
          f"p5 {fmt(fields['power_p5_w'], 'W')}   p95 {fmt(fields['power_p95_w'], 'W')}")
    energy = fields["energy_per_inference_mj"]
    print(f"  energy {fmt(energy / 1e3 if energy is not None else None, 'J')} over {elapsed:.2f} s   "
          f"samples {fields['power_samples']}   effective period {fmt(fields['power_sample_period_ms'], 'ms')}")
    if fields.get("power_unavailable_reason"):
        print(f"  note: {fields['power_unavailable_reason']}")
    return EXIT_OK
