"""Runs ON a node, with the node's own Python and the standard library only (`nodes.py`
uploads it and calls it over SSH). Three commands, each printing one JSON object last:

    check DIR          what the machine has: Python, free disk at DIR, GPUs, CPUs, memory, uv
    venv PLAN          make DIR/venv (seeing the base Python's packages when asked), then list
                       what it already has and the last install's stamp
    install PLAN       install the missing requirements, then the shipped wheels, with uv;
                       record the stamp so the next `nodes add` reuses the environment
    isolated PLAN      for each plugin installed `--isolated` on the server: a fresh
                       DIR/envs/PLUGIN layered on DIR/venv, its missing requirements and its
                       wheel in it; then record the stamp

It must still run (and report) on an old Python, so it avoids new syntax.
"""

import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig


def check(folder):
    probe = folder
    while probe and not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    usage = shutil.disk_usage(probe or "/")
    gpus = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=index,name,memory.total",
                                  "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=30)
            for line in out.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3 and parts[0].isdigit():
                    gpus.append({"index": int(parts[0]), "name": parts[1],
                                 "memory_mb": float(parts[2] or 0)})
        except (OSError, subprocess.SubprocessError):
            pass
    memory_gb = 0.0
    try:
        with open("/proc/meminfo") as f:
            memory_gb = int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {"python": platform.python_version(), "executable": sys.executable,
            "version": list(sys.version_info[:2]), "disk_free_gb": usage.free / 2**30,
            "gpus": gpus, "cpus": os.cpu_count() or 1, "memory_gb": memory_gb,
            "system": platform.system(), "machine": platform.machine()}


def marker_environment():
    """What `packaging.markers.default_environment()` gives, with the standard library."""
    info = sys.implementation.version
    version = f"{info.major}.{info.minor}.{info.micro}"
    if info.releaselevel != "final":
        version += info.releaselevel[0] + str(info.serial)
    return {"implementation_name": sys.implementation.name,
            "implementation_version": version, "os_name": os.name,
            "platform_machine": platform.machine(), "platform_release": platform.release(),
            "platform_system": platform.system(), "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]),
            "sys_platform": sys.platform}


LIST = ("import json, sys\nfrom importlib.metadata import distributions\n"
        "d = {}\nfor dist in distributions():\n"
        "    name = dist.metadata['Name']\n"
        "    if name and name.lower() not in d: d[name.lower()] = dist.version\n"
        "print(json.dumps(d))\n")


def venv(plan):
    folder, env = plan["dir"], os.path.join(plan["dir"], "venv")
    python = os.path.join(env, "bin", "python")
    if not os.path.exists(python):
        print(f"creating {env}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
        if plan.get("system_site_packages"):
            # The venv sees this Python's packages (a system Python, a conda env or a venv),
            # e.g. the torch of a GPU image, after its own.
            site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                                   "'purelib'))"], stdout=subprocess.PIPE,
                                  text=True, check=True).stdout.strip()
            dirs = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
            with open(os.path.join(site, "_stablecore_base.pth"), "w") as f:
                f.write("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs)
                        + "\n")
    out = subprocess.run([python, "-c", LIST], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    stamp_file = os.path.join(folder, "installed.json")
    stamp = None
    if os.path.exists(stamp_file):
        with open(stamp_file) as f:
            stamp = json.load(f).get("stamp")
    return {"installed": json.loads(out), "environment": marker_environment(), "stamp": stamp}


def find_uv(python):
    """uv on PATH, else the `uv` package in the venv (or its base), else install it there."""
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run([python, "-c", "import uv; print(uv.find_uv_bin())"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
    if probe.returncode == 0:
        return [probe.stdout.strip()]
    print("uv not found: installing it into the venv with pip", flush=True)
    subprocess.run([python, "-m", "ensurepip", "--upgrade"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "uv"], check=True)
    return [python, "-m", "uv"]


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    for line in proc.stdout:
        print("  " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")


def install(plan):
    folder = plan["dir"]
    python = os.path.join(folder, "venv", "bin", "python")
    uv = find_uv(python)
    extra = plan.get("uv_args", [])
    if plan.get("missing"):
        run([*uv, "pip", "install", "--python", python, *extra, *plan["missing"]])
    run([*uv, "pip", "install", "--python", python, "--no-deps", "--reinstall", *extra,
         *plan["wheels"]])
    if plan.get("stamp"):
        record(folder, plan["stamp"])
    return {"ok": True}


def record(folder, stamp):
    with open(os.path.join(folder, "installed.json"), "w") as f:
        json.dump({"stamp": stamp}, f)


PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"


def isolated(plan):
    """An env per plugin whose own packages come first, then the node's venv (which holds
    stable-core), as `plugin install --isolated` makes them on the server."""
    folder, extra = plan["dir"], plan.get("uv_args", [])
    base = os.path.join(folder, "venv", "bin", "python")
    base_site = subprocess.run([base, "-c", PURELIB], stdout=subprocess.PIPE, text=True,
                               check=True).stdout.strip()
    uv = find_uv(base)
    for item in plan["envs"]:
        env = os.path.join(folder, "envs", item["plugin"])
        python = os.path.join(env, "bin", "python")
        shutil.rmtree(env, ignore_errors=True)
        print(f"creating {env} for {item['plugin']} (installed --isolated)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
        site = subprocess.run([python, "-c", PURELIB], stdout=subprocess.PIPE, text=True,
                              check=True).stdout.strip()
        with open(os.path.join(site, "_stablecore_base.pth"), "w") as f:
            f.write(f"import site; site.addsitedir({base_site!r})\n")
        if item["missing"]:
            run([*uv, "pip", "install", "--python", python, *extra, *item["missing"]])
        run([*uv, "pip", "install", "--python", python, "--no-deps", "--reinstall", *extra,
             item["wheel"]])
    record(folder, plan["stamp"])
    return {"ok": True}


def main():
    command, arg = sys.argv[1], sys.argv[2]
    if command == "check":
        result = check(arg)
    else:
        plan = json.loads(base64.b64decode(arg).decode())
        result = {"venv": venv, "install": install, "isolated": isolated}[command](plan)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
