"""A pod-like sandbox for one container of a buildah image: root only (mount, chroot, network namespace).

``run_pod(ref, spec, work)`` mounts the image, then re-runs this module in a private mount and network
namespace (``unshare``), which builds the container's view (see ``tools.image_pod``), starts the process under
strace as the kubelet would start it (chroot, working directory, supplementary groups, gid, uid,
no_new_privs, execve), probes it over loopback and stops it with SIGTERM. Nothing outlives the namespace:
its mounts go when its last process exits.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINER = "edge-diffusion-image-test"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
SHM_SIZE = "64m"  # what containerd gives a pod
# Every system call that changes the file system; on a read-only mount each one fails with EROFS.
TRACED = ("open,openat,openat2,creat,mkdir,mkdirat,rmdir,unlink,unlinkat,rename,renameat,renameat2,link,linkat,"
          "symlink,symlinkat,chmod,fchmod,fchmodat,chown,fchown,fchownat,lchown,truncate,ftruncate,utime,utimes,"
          "utimensat,futimesat,mknod,mknodat,setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr")
PR_SET_NO_NEW_PRIVS = 38


def run_pod(ref: str, spec: dict, work: Path) -> dict:
    from tools.image_build import buildah

    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("*.log"):
        stale.unlink()
    subprocess.run(buildah("rm", CONTAINER), capture_output=True)
    subprocess.run(buildah("from", "--pull=never", "--name", CONTAINER, ref), check=True, capture_output=True)
    try:
        root = subprocess.run(buildah("mount", CONTAINER), check=True, capture_output=True,
                              text=True).stdout.strip()
        (work / "spec.json").write_text(json.dumps(spec, indent=2))
        budget = spec["startup_budget_s"] + spec["drain_s"] + 300
        inner = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "--fork",
                                sys.executable, "-m", "tools.image_sandbox", "inside", str(work), root],
                               cwd=REPO_ROOT, timeout=budget)
        result_file = work / "result.json"
        if not result_file.exists():
            raise RuntimeError(f"the sandbox exited {inner.returncode} without a result; see {work}")
        result = json.loads(result_file.read_text())
    finally:
        subprocess.run(buildah("umount", CONTAINER), capture_output=True)
        subprocess.run(buildah("rm", CONTAINER), capture_output=True)
    result["stderr"] = (work / "server.stderr.log").read_text(errors="replace")
    result["strace"] = (work / "strace.log").read_text(errors="replace")
    return result


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _container_root(work: Path, image_root: str, spec: dict) -> Path:
    root = work / "root"
    root.mkdir(exist_ok=True)
    _mount("--bind", image_root, str(root))
    if spec["read_only_root"]:
        _mount("-o", "remount,bind,ro", str(root))
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc"))
    dev = root / "dev"
    _mount("-t", "tmpfs", "-o", "nosuid,mode=755,size=64k", "tmpfs", str(dev))
    for name in DEVICES:
        (dev / name).touch()
        _mount("--bind", f"/dev/{name}", str(dev / name))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        (dev / name).symlink_to(target)
    (dev / "shm").mkdir()
    _mount("-t", "tmpfs", "-o", f"nosuid,nodev,noexec,mode=1777,size={SHM_SIZE}", "shm", str(dev / "shm"))
    # emptyDir with fsGroup: group-owned by the fsGroup, setgid, writable by all (as the kubelet makes it).
    for volume in spec["writable"]:
        size = f",size={volume['size']}" if volume.get("size") else ""
        gid = f",gid={spec['groups'][0]}" if spec["groups"] else ""
        _mount("-t", "tmpfs", "-o", f"nosuid,nodev,mode=2777{gid}{size}", "emptydir",
               str(root / volume["path"].lstrip("/")))
    return root


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
          timeout: float = 5) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _server_pid(strace_pid: int) -> int | None:
    children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children")
    pids = children.read_text().split() if children.exists() else []
    return int(pids[0]) if pids else None


def _ids(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(v) for v in value.split()]
    return fields


def inside(work: Path, image_root: str) -> int:
    """In the private namespaces: build the container's view, run the process, probe it, stop it."""
    spec = json.loads((work / "spec.json").read_text())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    root = _container_root(work, image_root, spec)
    key_file = root / spec["api_key_path"].lstrip("/")
    key_file.write_text(spec["api_key"] + "\n")
    os.chown(key_file, spec["uid"], spec["gid"])
    key_file.chmod(0o400)
    result: dict = {"problems": []}
    problems = result["problems"]
    base = f"http://127.0.0.1:{spec['port']}"
    started = time.monotonic()
    with open(work / "server.stdout.log", "wb") as out, open(work / "server.stderr.log", "wb") as err:
        process = subprocess.Popen(
            ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "signal=none", "-e", "status=failed", "-e",
             f"trace={TRACED}", "-o", str(work / "strace.log"), "--",
             sys.executable, "-m", "tools.image_sandbox", "launch", str(work / "spec.json"), str(root)],
            cwd=REPO_ROOT, stdout=out, stderr=err)
        try:
            ready = False
            deadline = started + spec["startup_budget_s"]
            while time.monotonic() < deadline and process.poll() is None and not ready:
                try:
                    ready = _http("GET", base + spec["readiness_path"], timeout=2)[0] == 200
                except OSError:
                    pass
                if not ready:
                    time.sleep(0.5)
            result["ready_s"] = round(time.monotonic() - started, 1)
            pid = _server_pid(process.pid)
            if pid is not None:
                result["process_ids"] = _ids(pid)
                if set(result["process_ids"]["Uid"]) != {spec["uid"]}:
                    problems.append(f"the server runs as uid {result['process_ids']['Uid']}, not {spec['uid']}")
            if not ready:
                problems.append(f"{spec['readiness_path']} was not 200 within the startup probe's "
                                f"{spec['startup_budget_s']} s (process exit code {process.poll()})")
            else:
                body = json.dumps({"prompt": "a lighthouse on a cliff", "seed": 7}).encode()
                t0 = time.monotonic()
                status, headers, payload = _http(
                    "POST", base + "/generate", body,
                    {"Authorization": f"Bearer {spec['api_key']}", "Content-Type": "application/json"}, timeout=300)
                result["generate"] = {"status": status, "content_type": headers.get("content-type"),
                                      "bytes": len(payload), "seconds": round(time.monotonic() - t0, 2)}
                if status != 200 or not payload.startswith(b"\x89PNG"):
                    problems.append(f"/generate answered {status} {payload[:200]!r}")
        finally:
            pid = _server_pid(process.pid)
            if process.poll() is None and pid is not None:
                os.kill(pid, signal.SIGTERM)
            try:
                result["exit_code"] = process.wait(timeout=spec["drain_s"] + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                result["exit_code"] = process.wait()
            if result["exit_code"] != 0:
                problems.append(f"the server exited {result['exit_code']} after SIGTERM")
    stderr_text = (work / "server.stderr.log").read_text(errors="replace")
    result["modules_loaded_from_bytecode"] = stderr_text.count(".pyc matches ")
    result["files_written_in_writable_mounts"] = sorted(
        str(Path("/") / p.relative_to(root)) for volume in spec["writable"]
        for p in (root / volume["path"].lstrip("/")).rglob("*") if p.is_file() and p != key_file)
    (work / "result.json").write_text(json.dumps(result, indent=2))
    return 0


def launch(spec_file: Path, root: str) -> None:
    """Become the container's process: what the runtime does between creating the sandbox and execve."""
    import ctypes

    spec = json.loads(spec_file.read_text())
    os.chroot(root)
    os.chdir(spec["workdir"])
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    if spec["no_new_privs"]:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["inside"]:
        sys.exit(inside(Path(sys.argv[2]), sys.argv[3]))
    if sys.argv[1:2] == ["launch"]:
        launch(Path(sys.argv[2]), sys.argv[3])
    sys.exit(f"usage: python -m {__spec__.name} inside WORK IMAGE_ROOT | launch SPEC ROOT")
