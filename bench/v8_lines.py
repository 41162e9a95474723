"""Where the module's compiled code goes on a request, per Wasm function, as V8 runs it.

Envoy runs the module in V8 with TurboFan. On a new token the filter's cost over the floor is
less its instructions than the code lines it runs: they no longer fit the CPU's L2 with
Envoy's own (bench/README.md, "Where the time goes"). `--callgrind N --cache-sim` counts those
lines for a whole Envoy process; this names the functions they belong to.

It runs one case of a V8 job (the `v8_time.json` that `bench/run.sh --keep` leaves in its run
folder) through `bench/v8_time.js` under valgrind's callgrind, with node's
`--print-wasm-code` listing where V8 put each function's code. Two runs that differ only in
how many requests they serve give, function by function, the instructions one request runs
(the difference over the difference in requests: start-up and configuration cancel out) and
the 64-byte lines of its code that ran. The module is built with its function names kept
(`CARGO_PROFILE_RELEASE_STRIP=false`, then scripts/envoy_module.py, as Envoy is given it);
the job's IdP is started on its port if nothing answers there.

usage: python3 bench/v8_lines.py RUN/v8_time.json [--case filter-rs256-distinct]
                                 [--requests 500] [--wasm NAMED.envoy.wasm] [--top 40]

Instructions are node's V8 (the same major version's TurboFan as Envoy's, not the same
build): compare builds with this, and Envoy with --callgrind.
"""
import argparse
import bisect
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
KEYS = os.path.join(BENCH, ".keys/keys.json")
LINE = 64


def named_build():
    """The filter's Envoy build from the current tree, with its function names."""
    target = os.path.join(ROOT, "target", "v8-lines")
    env = dict(os.environ, CARGO_PROFILE_RELEASE_STRIP="false", CARGO_TARGET_DIR=target)
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "--quiet"],
                   cwd=ROOT, env=env, check=True)
    built = os.path.join(target, "wasm32-wasip1", "release", "app_auth_filter.wasm")
    out = os.path.join(target, "app_auth_filter.names.envoy.wasm")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "envoy_module.py"), built, out],
                   check=True)
    return out


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_idp(port, folder):
    """The bench IdP on `port` (its keys as the job's tokens were minted with), if none runs."""
    if answers(port):
        return None
    if not os.path.exists(KEYS):
        sys.exit(f"v8_lines: no IdP on port {port} and no bench keys at {KEYS}: run bench/run.sh first")
    log = open(os.path.join(folder, "idp.log"), "w")
    idp = subprocess.Popen(["node", os.path.join(BENCH, "idp.js"), "serve", "--keys", KEYS,
                            "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        if answers(port):
            return idp
        if idp.poll() is not None:
            break
        time.sleep(0.1)
    idp.kill()
    sys.exit(f"v8_lines: the bench IdP did not start on port {port} (see {log.name})")


def code_ranges(listing):
    """(start, end, name) of each function V8 compiled, from node's --print-wasm-code."""
    ranges, current = [], None
    with open(listing, errors="replace") as f:
        for line in f:
            if line.startswith("--- WebAssembly code ---"):
                current = {}
            elif current is None:
                continue
            elif line.startswith("name: "):
                current["name"] = line[6:].strip()
            elif line.startswith("Instructions (size = "):
                current["size"] = int(re.match(r"Instructions \(size = (\d+)\)", line).group(1))
            elif "start" not in current and re.match(r"0x[0-9a-f]+\s+0\s", line):
                current["start"] = int(line.split()[0], 16)
            elif line.startswith("--- End code ---"):
                if "start" in current and current.get("size"):
                    ranges.append((current["start"], current["start"] + current["size"],
                                   current.get("name", "?")))
                current = None
    ranges.sort()
    return ranges


def executed(profile, ranges):
    """Per function: instructions executed and the set of code lines that ran."""
    starts = [r[0] for r in ranges]
    counts, lines = collections.Counter(), collections.defaultdict(set)
    after_call = False
    with open(profile) as f:
        for line in f:
            if after_call:
                # The line after `calls=` is the call's inclusive cost, not an instruction.
                after_call = False
                continue
            if line.startswith("calls="):
                after_call = True
            elif line.startswith("0x"):
                fields = line.split()
                address, count = int(fields[0], 16), int(fields[-1])
                i = bisect.bisect_right(starts, address) - 1
                if i >= 0 and address < ranges[i][1]:
                    name = ranges[i][2]
                    counts[name] += count
                    lines[name].add(address // LINE)
    return counts, lines


def run(job, case, requests, folder):
    """One callgrind run of `case` serving `requests` per round; its counts and lines."""
    job = dict(job, warmup=300, rounds=1, cases=[dict(case, requests=requests)])
    path = os.path.join(folder, f"job-{requests}.json")
    with open(path, "w") as f:
        json.dump(job, f)
    profile = os.path.join(folder, f"callgrind-{requests}.out")
    listing = os.path.join(folder, f"code-{requests}.txt")
    errors = os.path.join(folder, f"stderr-{requests}.txt")
    with open(listing, "w") as out, open(errors, "w") as err:
        subprocess.run(["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--dump-instr=yes",
                        "--compress-strings=no", "--compress-pos=no", f"--callgrind-out-file={profile}",
                        "node", "--no-liftoff", "--print-wasm-code", "--expose-gc",
                        os.path.join(BENCH, "v8_time.js"), path],
                       stdout=out, stderr=err, timeout=1800)
    # v8_time.js's results are a line of their own among V8's listing (which goes on while
    # V8 compiles, after the results too).
    with open(listing, errors="replace") as f:
        text = f.read()
    at = text.rfind('\n{"node"')
    if at < 0:
        sys.exit(f"v8_lines: v8_time.js under callgrind gave no results (see {errors})")
    result = json.loads(text[at:].split("\n", 2)[1])["results"][case["name"]]
    if "error" in result:
        sys.exit(f"v8_lines: {case['name']}: {result['error']}")
    counts, lines = executed(profile, code_ranges(listing))
    # v8_time.js serves the warm-up, then one round it does not keep, then the rounds.
    return counts, lines, job["warmup"] + (job["rounds"] + 1) * requests


def demangled(names):
    if not shutil.which("c++filt"):
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return [re.sub(r"::h[0-9a-f]{16}$", "", n) for n in out.split("\n")[:len(names)]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", help="a v8_time.json (bench/run.sh --keep leaves one in its run folder)")
    ap.add_argument("--case", default="filter-rs256-distinct")
    ap.add_argument("--requests", type=int, default=500, help="requests per round of the smaller run")
    ap.add_argument("--wasm", help="an Envoy build with function names (default: built from the tree)")
    ap.add_argument("--top", type=int, default=40, help="functions listed")
    args = ap.parse_args()
    for tool in ("valgrind", "node"):
        if not shutil.which(tool):
            sys.exit(f"v8_lines: {tool} is not installed")
    with open(args.job) as f:
        job = json.load(f)
    case = next((c for c in job["cases"] if c["name"] == args.case), None)
    if case is None:
        sys.exit(f"v8_lines: no case {args.case!r} in {args.job}: "
                 + ", ".join(c["name"] for c in job["cases"]))
    case = dict(case, wasm=os.path.abspath(args.wasm) if args.wasm else named_build())
    # Kept for a look (the profiles are tens of MB; the next run replaces them).
    folder = os.path.join(ROOT, "target", "v8-lines", "run")
    os.makedirs(folder, exist_ok=True)
    idp = start_idp(job["idp_port"], folder)
    try:
        small, _, served_small = run(job, case, args.requests, folder)
        large, lines, served_large = run(job, case, 3 * args.requests, folder)
    finally:
        if idp is not None:
            idp.terminate()
            idp.wait(timeout=10)
    extra = served_large - served_small
    per_request = {name: (large[name] - small.get(name, 0)) / extra for name in large}
    # A function a request runs: at least one instruction per request, on average.
    ran = sorted((n for n, v in per_request.items() if v >= 1), key=lambda n: -per_request[n])
    total = sum(per_request[n] for n in ran)
    kb = sum(len(lines[n]) for n in ran) * LINE / 1024
    print(f"{case['name']} in V8 (node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"TurboFan): {total:,.0f} instructions per request in {len(ran)} functions of the module, "
          f"{kb:.1f} KB of their code lines")
    print(f"{'instructions':>12} {'code B':>7}  function")
    for name, shown in zip(ran[:args.top], demangled(ran[:args.top])):
        print(f"{per_request[name]:12,.0f} {len(lines[name]) * LINE:7,}  {shown}")
    rest = ran[args.top:]
    if rest:
        print(f"{sum(per_request[n] for n in rest):12,.0f} {sum(len(lines[n]) for n in rest) * LINE:7,}  "
              f"({len(rest)} more)")


if __name__ == "__main__":
    main()
