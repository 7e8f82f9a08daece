"""The push against plain `rsync -a` over the same ssh: a full push of a borg repository,
then an incremental one after about 1% new data.

Figures (issue #21), side by side in one run, to an sshd on 127.0.0.1 that this script
starts (and stops) with a configuration of its own: the push (a new tree on the far side,
hard links to the previous one, fsync, the marker and the atomic switch, through the
write-only key's rrsync) against `rsync -a --delete` of the same repository over the same
ssh (the hand-made setup of seed 003), with and without --fsync; and the bytes the
incremental push sent against the bytes that changed in the repository. The push makes
three connections where rsync makes one (data, marker, switch): about 0.35 s each on
loopback, most of it rrsync's start, which is what a small push costs more.
Run (root): .venv/bin/python bench/push_copy.py [SIZE_MB]   (default 512)
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mirror_copy import borg, cold, tree_bytes, write_random
from table import Figure, report

from offsite.config.model import Config, Job, JobKind, PushTarget, Repository
from offsite.jobs import mirror, push, pushkeys
from offsite.run import run
from offsite.sshkeys import make_key, ssh_argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sshd(work: Path, port: int, authorized: list[str]) -> subprocess.Popen[bytes]:
    """An sshd of this benchmark's own on 127.0.0.1 (root logs in with the keys given)."""
    (work / "authorized_keys").write_text("\n".join(authorized) + "\n")
    make_key(work / "host_key", "bench host key")
    (work / "sshd_config").write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {work}/host_key",
        "PermitRootLogin prohibit-password", f"AuthorizedKeysFile {work}/authorized_keys",
        "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PidFile none", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")],  # noqa: S603
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the benchmark's sshd did not start")


def main() -> int:
    size = int(sys.argv[1]) * (1 << 20) if len(sys.argv) > 1 else 512 << 20
    work = Path(tempfile.mkdtemp(prefix="offsite-bench-push-", dir="/var/tmp"))
    server: subprocess.Popen[bytes] | None = None
    try:
        base, data, src = work / "base", work / "data", work / "repo"
        far, plain, keys = work / "far", work / "plain", work / "keys"
        for d in (data, far, plain, keys):
            d.mkdir()
        borg(base, "init", "--encryption=repokey-blake2", "--", str(src))
        write_random(data / "bulk", size)
        borg(base, "create", "--compression=none", "--", f"{src}::one", str(data))
        (data / "bulk").unlink()

        port = free_port()
        job = Job("bench", JobKind.PUSH, 3600.0, repositories=("repo",),
                  to=PushTarget("127.0.0.1", str(far), "root", port))
        cfg = Config(work / "offsite.yaml", (), (Repository("repo", src),), (job,))
        lines = pushkeys.authorized_keys(job, "127.0.0.1", keys)
        make_key(keys / "plain", "bench plain rsync key")
        lines.append((keys / "plain.pub").read_text().strip())  # no forced command
        server = sshd(work, port, lines)
        records = work / "records"
        plain_rsh = shlex.join(ssh_argv(keys / "plain", keys / "bench" / "known_hosts",
                                        "root", port, False))

        def rsync_plain(*extra: str) -> int:
            out = run(["rsync", "-a", "--delete", "--stats", *extra, "--rsh", plain_rsh,
                       f"{src}/", f"127.0.0.1:{plain}/"], timeout=3600).stdout.splitlines()
            return push.bytes_sent(out)

        def timed(what: object) -> tuple[float, int]:
            cold()
            started = time.perf_counter()
            sent = what() if callable(what) else 0
            return time.perf_counter() - started, int(sent)

        full_push_s, full_push_b = timed(lambda: push.push_repository(cfg, job, "repo", keys,
                                                                      records))
        full_rsync_s, full_rsync_b = timed(rsync_plain)
        shutil.rmtree(plain)
        full_fsync_s, _ = timed(lambda: rsync_plain("--fsync"))

        before = mirror.scan(src)
        write_random(data / "new", size // 100)
        borg(base, "create", "--compression=none", "--", f"{src}::two", str(data))
        after = mirror.scan(src)
        changed = sum(e.size for p, e in after.files.items() if before.files.get(p) != e)
        time.sleep(1.1)  # a new tree name (the push's second)
        inc_push_s, inc_push_b = timed(lambda: push.push_repository(cfg, job, "repo", keys,
                                                                    records))
        inc_rsync_s, inc_rsync_b = timed(rsync_plain)
        borg(base, "create", "--compression=none", "--", f"{src}::three", str(data))
        time.sleep(1.1)
        inc_push2_s, _ = timed(lambda: push.push_repository(cfg, job, "repo", keys, records))
        inc_fsync_s, _ = timed(lambda: rsync_plain("--fsync"))
        trees = sorted(p.name for p in (far / "repo.offsite").iterdir())
        assert len(trees) == 1 and (far / "repo").resolve() == far / "repo.offsite" / trees[0]

        print(f"repository: {tree_bytes(before) / (1 << 20):.0f} MiB in "
              f"{len(before.segments())} segments; {changed / (1 << 20):.1f} MiB changed")
        return report([
            Figure("push_copy", "full push (new tree, fsync, switch)", full_push_s, "s",
                   "rsync -a --delete, same ssh", full_rsync_s),
            Figure("push_copy", "full push (new tree, fsync, switch)", full_push_s, "s",
                   "rsync -a --delete --fsync", full_fsync_s, "<= 1.3x",
                   full_push_s <= 1.3 * full_fsync_s),
            Figure("push_copy", "incremental push (1% new)", inc_push_s, "s",
                   "rsync -a --delete, same ssh", inc_rsync_s),
            Figure("push_copy", "incremental push (a small archive)", inc_push2_s, "s",
                   "rsync -a --delete --fsync", inc_fsync_s),
            Figure("push_copy", "incremental push: bytes sent", inc_push_b, "bytes",
                   "bytes changed", changed, "<= 1.05x", inc_push_b <= 1.05 * changed),
            Figure("push_copy", "incremental rsync -a: bytes sent", inc_rsync_b, "bytes",
                   "bytes changed", changed),
            Figure("push_copy", "full push: bytes sent", full_push_b, "bytes",
                   "full rsync -a: bytes sent", full_rsync_b),
        ])
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
