"""A throw-away Slurm cluster for tests: munged + slurmctld + slurmd in a temporary folder, no
systemd or cgroups, stopped by PID afterwards.

One node by default (named after this host). ``nodes=N`` emulates N nodes on this machine: N
slurmd daemons (``slurmd -N NAME``), each with its own port and its own spool/pid/log files
(``%n`` in the paths), all at ``NodeAddr=127.0.0.1``. Their names (``PREFIX1..PREFIXN``) do not
resolve on purpose: the launcher finds a node's address the way a real cluster's NodeAddr says
(tools/toolkit/launch.py), without /etc/hosts edits.

Debian's packages are installed when missing (`apt-get`, as root). :func:`unavailable` says
why a cluster cannot be had here, so tests skip with that reason instead of silently.
"""
import fcntl
import os
import signal
import socket
import subprocess
import tempfile
import time

from debian_packages import install_missing

PACKAGES = ('slurmctld', 'slurmd', 'slurm-client', 'munge')
BINARIES = ('slurmctld', 'slurmd', 'munged', 'srun', 'sbatch', 'squeue', 'scontrol')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _first_job_id(block: int = 200, blocks: int = 55) -> int:
    """The first job id of a new cluster, a block of ids that the clusters started just before
    on this machine (other test sessions, the other fixture) do not hand out: the launchers take
    MASTER_PORT from the job id (20000 + id % 20000), unique on a real cluster but not across two
    clusters on one machine, where job 3 of each would collide. Blocks come round-robin from a
    counter that the sessions share, and stay under id 12000 (ports under the ephemeral range)."""
    with open(os.path.join(tempfile.gettempdir(), 'slurm-test-clusters.counter'), 'a+') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read().strip() or 0) % blocks
        f.seek(0)
        f.truncate()
        f.write(str(n + 1))
    return 1000 + n * block


def unavailable() -> str | None:
    """None when the binaries exist or were just installed, else the reason."""
    return install_missing(BINARIES, PACKAGES, 'Slurm')


class SlurmCluster:
    def __init__(self, root: str, cpus: int | None = None, nodes: int = 1,
                 prefix: str = 'tnode', conf: str = ''):
        """``cpus``: per node (default: all of this machine's for one node, 1 for several); more
        than the machine has lets test processes that share the cluster run side by side.
        ``conf``: more slurm.conf lines (preemption, a Prolog, partitions over ``ALL`` nodes)."""
        self.root = root
        self.cpus = cpus or ((os.cpu_count() or 1) if nodes == 1 else 1)
        self.node = socket.gethostname()  # also the controller's host name
        self.nodes = [self.node] if nodes == 1 else [f'{prefix}{i}' for i in range(1, nodes + 1)]
        self.conf = os.path.join(root, 'slurm.conf')
        self.procs: dict[str, int] = {}
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.extra_conf = conf

    def _write_conf(self) -> None:
        r = self.root
        for d in ('state', 'munge', 'log', *(f'spool/{n}' for n in self.nodes)):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        os.chmod(os.path.join(r, 'munge'), 0o755)  # clients must reach the socket
        mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**20
        ctld_port, slurmd_port = _free_port(), _free_port()
        node_lines = ''.join(
            f'NodeName={n} NodeAddr=127.0.0.1 Port={_free_port() if i else slurmd_port} '
            f'CPUs={self.cpus} RealMemory={mem // len(self.nodes)} State=UNKNOWN\n'
            for i, n in enumerate(self.nodes))
        with open(self.conf, 'w') as f:
            f.write(f"""ClusterName=testcluster{len(self.nodes) if len(self.nodes) > 1 else ''}
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
# Slurm starts a requeued job cred_expire + 1 s after the requeue, once the killed run's
# credential is revoked on its nodes (started sooner, a node can refuse it as already killed
# and the job ends FAILED without running); the main scheduler looks every second.
AuthInfo=socket={r}/munge/munge.socket,cred_expire=10
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerParameters=bf_interval=1,sched_interval=1
SlurmdParameters=config_overrides
FirstJobId={_first_job_id()}
MessageTimeout=30
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
{node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
{self.extra_conf}""")

    def start(self) -> 'SlurmCluster':
        self._write_conf()
        r = self.root
        key = os.path.join(r, 'munge', 'munge.key')
        with open(key, 'wb') as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        subprocess.run(['munged', '--force', f'--key-file={key}',
                        f'--socket={r}/munge/munge.socket', f'--pid-file={r}/munge/munged.pid',
                        f'--log-file={r}/log/munged.log', f'--seed-file={r}/munge/seed'],
                       check=True, env=self.env)
        self.procs['munged'] = self._read_pid(f'{r}/munge/munged.pid')
        subprocess.run(['slurmctld', '-c', '-i'], check=True, env=self.env)
        self.procs['slurmctld'] = self._read_pid(f'{r}/slurmctld.pid')
        for n in self.nodes:
            subprocess.run(['slurmd', '-N', n], check=True, env=self.env)
            self.procs[f'slurmd-{n}'] = self._read_pid(f'{r}/slurmd-{n}.pid')
        deadline = time.time() + 60
        while time.time() < deadline:
            # one line per node and partition: ``conf`` may add partitions
            states = dict(line.split() for line in self.run(
                'sinfo', '-h', '-N', '-o', '%N %T', check=False).stdout.splitlines())
            if (len(states) == len(self.nodes)
                    and set(states.values()) <= {'idle', 'mixed', 'allocated'}):
                return self
            time.sleep(0.5)
        raise RuntimeError(f'slurm nodes not all idle after 60 s (states {states!r}); '
                           f'logs in {r}/log')

    @staticmethod
    def _read_pid(path: str, timeout: float = 20) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                return int(open(path).read().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        raise RuntimeError(f'no pid file {path}')

    def run(self, *cmd, check=True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=kw.pop('env', self.env), capture_output=True, text=True,
                              check=check, **kw)

    def job_fields(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s KEY=VALUE fields; empty when scontrol did not answer (a
        loaded controller can time out), which callers must not read as a state."""
        out = self.run('scontrol', 'show', 'job', job_id, check=False).stdout
        return dict(tok.split('=', 1) for tok in out.split() if '=' in tok)

    def job_state(self, job_id: str) -> str:
        return self.job_fields(job_id).get('JobState', 'UNKNOWN')

    def requeue(self, job_id: str, timeout: float = 120) -> None:
        """``scontrol requeue``, returning once Slurm has taken it (the job's restart count went
        up and it is pending or running again). Raises with the job's fields and the
        controller's log when it did not take in ``timeout``: a job that only looks requeued
        fails later, far from the cause."""
        restarts = int(self.job_fields(job_id).get('Restarts', 0))
        deadline, answer = time.time() + timeout, None
        while time.time() < deadline:
            if answer is None or answer.returncode:  # refused (e.g. still completing): again
                answer = self.run('scontrol', 'requeue', job_id, check=False)
            fields = self.job_fields(job_id)
            if (int(fields.get('Restarts', restarts)) > restarts
                    and fields['JobState'] not in ('COMPLETING', 'REQUEUED')):
                return
            time.sleep(0.25)
        log = open(os.path.join(self.root, 'log', 'slurmctld.log')).read()[-3000:]
        raise AssertionError(f'scontrol requeue {job_id} did not take in {timeout:.0f} s '
                             f'(last answer {answer.returncode}: {answer.stderr.strip()!r}; job '
                             f'{self.job_fields(job_id)}); slurmctld.log ends:\n{log}')

    def wait(self, job_id: str, timeout: float = 600,
             done=('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY')):
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.job_state(job_id)
            if state in done:
                return state
            time.sleep(1)
        raise TimeoutError(f'job {job_id} still {self.job_state(job_id)} after {timeout} s')

    def stop(self) -> None:
        """Cancel every job, then end the daemons together: each takes about 2 s to shut down,
        and the run's last worker stops every cluster on its way out."""
        subprocess.run(['scancel', '--full', '-u', 'root'], env=self.env, capture_output=True)
        pids = []
        for name in (*(f'slurmd-{n}' for n in self.nodes), 'slurmctld', 'munged'):
            pid = self.procs.pop(name, None)
            try:
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
                    pids.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        for pid in pids:
            try:
                while time.time() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
