"""What the container runs, rendered as /sbin/init (docs/design.md section 6): the run
settings (runconfig.py) become a POSIX sh script for busybox.

Pure: no I/O. Both scripts start with `#!/busybox-lxd sh` because the image may
have no shell at all (distroless). Every applet is called as `/busybox-lxd APPLET`:
the image's PATH is the app's, not ours.

Decisions worth knowing (measured with Debian's busybox-static 1.35):
* Debian's busybox `setpriv` has no --reuid/--regid, so the user switch uses
  `busybox nsenter -S UID -G GID` (no namespace entered): it needs no passwd entry,
  clears the supplementary groups, and execs without forking.
* That busybox prefers its applets over PATH (FEATURE_SH_STANDALONE), so a bare
  `httpd` would run busybox's applet instead of the image's binary. The init looks
  the command up in the image PATH itself, like runc, and keeps argv[0] with
  `exec -a`.
* Without job control, POSIX shells start `&` commands with SIGINT and SIGQUIT
  ignored, and busybox ash cannot undo that. When the StopSignal is one of those
  and the child still ignores it at stop time, the init sends SIGTERM instead and
  says so, so that `lxc stop` stays graceful.
* The app's environment is Docker's and nothing more: image Env (LXD's
  `environment.*` win), HOME, HOSTNAME, LXC's `container=lxc`. ash exports SHLVL
  and PWD of its own, so the shell that execs the app unsets those (SHELL_OWNED).
"""

from __future__ import annotations

from lxdocker.build.runconfig import DEFAULT_PATH, RunConfig
from lxdocker.build.signals import SIGNALS

BUSYBOX = "/busybox-lxd"
UDHCPC_SCRIPT = "/lxd-udhcpc.script"
REALINIT = "/lxd-realinit"
# The image's HEALTHCHECK as a script, for lxdocker-update's health gate (lxdupdate/).
HEALTHCHECK_SCRIPT = "/lxd-healthcheck"
# The image's VOLUME paths, one absolute normalised path per line (sorted, LF-terminated,
# UTF-8), for lxdocker-update and the plain-LXC updater; absent when it declares none.
VOLUMES_FILE = "/lxd-volumes"
# Restart backoff in tenths of a second: 0.1 s doubling up to 30 s, reset after a
# child that ran 10 s (Docker's policy: 100 ms doubling, capped, reset on success).
BACKOFF_START_DS = 1
BACKOFF_CAP_DS = 300
BACKOFF_RESET_S = 10

# Names busybox ash sets or resets itself (measured: SHLVL, PWD at start, OLDPWD on
# cd, PPID, OPTIND and IFS overwrite imported values). Docker's app gets none of
# them unless the image Env or LXD names them, so the last shell before the app
# unsets them and puts back only those values (kept as _lxd_k_NAME).
SHELL_OWNED = ("SHLVL", "PWD", "OLDPWD", "PPID", "OPTIND", "IFS")


def sh_quote(value: str) -> str:
    """One shell word, single-quoted ('\\'' for quotes): newlines and '' survive."""
    if "\0" in value:
        raise ValueError("a NUL byte cannot be passed to a program")
    return "'" + value.replace("'", "'\\''") + "'"


def render_init(cfg: RunConfig, *, realinit: bool = False) -> str:
    """The /sbin/init text. `realinit`: the image's own init is at /lxd-realinit."""
    bb = BUSYBOX
    out = [_INIT_HEAD.replace("@BB@", bb).replace("@OWNED@", "|".join(SHELL_OWNED))]
    out.append(f"export PATH={sh_quote(cfg.path or DEFAULT_PATH)}\n")
    for key, value in cfg.env:
        # LXD's value of a shell-owned name is already in _lxd_k_NAME (_INIT_HEAD).
        action = f"_lxd_k_{key}" if key in SHELL_OWNED else f"export {key}"
        out.append(f"case $_lxd_given in *' {key} '*) ;; *) {action}={sh_quote(value)} ;; esac\n")
    if not any(key == "HOSTNAME" for key, _ in cfg.env):
        # Docker sets HOSTNAME to the container's hostname unless the image Env has it.
        out.append(
            "case $_lxd_given in *' HOSTNAME '*) ;; *)"
            f' export HOSTNAME="$({bb} hostname)" ;; esac\n'
        )
    # For the app's shell; an exported name that is unset stays out of the environment.
    out.append("export " + " ".join(f"_lxd_k_{n}" for n in SHELL_OWNED) + "\n")
    if realinit:
        out.append(
            f"# The image's own init, moved aside at conversion, is visible at /sbin/init again.\n"
            f"{bb} mount --bind {REALINIT} /sbin/init 2>/dev/null"
            f" || _lxd_log 'cannot bind-mount {REALINIT} on /sbin/init'\n"
        )
    out.append(_INIT_SETUP.replace("@BB@", bb).replace("@SCRIPT@", UDHCPC_SCRIPT))
    wd = sh_quote(cfg.workdir)
    out.append(f"{bb} mkdir -p {wd} 2>/dev/null\n")
    out.append(f'cd {wd} || {{ _lxd_log "cannot change to the working directory"; exit 1; }}\n')
    out.append("set -- " + " ".join(sh_quote(a) for a in cfg.argv) + "\n")
    out.append(_INIT_LOOKUP)
    if cfg.uid == 0 and cfg.gid == 0:
        launch = f'{_ENV_FIX}; exec -a "$_lxd_name" "$_lxd_cmd" "$@"'
    else:
        # nsenter without a namespace only switches ids; the inner sh keeps argv[0]
        # and, being a new shell, is the one that must drop the shell's variables.
        launch = (
            f"exec {bb} nsenter -S {cfg.uid} -G {cfg.gid} -- {bb} sh -c"
            f' \'{_ENV_FIX}; exec -a "$0" "$@"\' "$_lxd_name" "$_lxd_cmd" "$@"'
        )
    if not cfg.supervise:
        out.append("# disable_supervisor: the app becomes PID 1.\n" + launch + "\n")
        return "".join(out)
    sig = cfg.stop_signal
    fallback = ""
    if sig in ("INT", "QUIT"):
        mask = 1 << (SIGNALS[sig] - 1)
        fallback = _FALLBACK.replace("@MASK@", str(mask)).replace("@BB@", bb)
    out.append(
        _SUPERVISOR.replace("@LAUNCH@", launch)
        .replace("@SIG@", sig)
        .replace("@FALLBACK@", fallback)
        .replace("@POLICY@", cfg.restart)
        .replace("@BB@", bb)
        .replace("@START@", str(BACKOFF_START_DS))
        .replace("@CAP@", str(BACKOFF_CAP_DS))
        .replace("@RESET@", str(BACKOFF_RESET_S))
    )
    return "".join(out)


# The text below is part of every image's bytes: its "DESIGN section 6" (the old
# name of docs/design.md section 6) stays, since editing it would change every
# image's fingerprint (tests/test_golden.py) and make every client download again.
_INIT_HEAD = r"""#!@BB@ sh
# /sbin/init written by lxdocker (DESIGN section 6); rewritten on every conversion.
_lxd_log() { echo "lxd-init: $*" >&2; }
# Names LXD gave PID 1 (environment.* keys) win over the image's defaults; PATH is
# always the image's. NUL-separated, so newlines inside values are turned into \001.
# The shell has already changed its own variables (SHLVL, PWD, ...): LXD's values
# of those come from the kernel's copy, newlines restored.
_lxd_given=' '
_lxd_nl='
'
_lxd_soh=$(printf '\001')
if [ -r /proc/$$/environ ]; then
	while IFS= read -r _lxd_l; do
		_lxd_given="$_lxd_given${_lxd_l%%=*} "
		case ${_lxd_l%%=*} in
		@OWNED@)
			_lxd_v=${_lxd_l#*=}
			eval "_lxd_k_${_lxd_l%%=*}=\${_lxd_v//\$_lxd_soh/\$_lxd_nl}"
			;;
		esac
	done <<_LXD_EOF
$(@BB@ tr '\000\n' '\n\001' < /proc/$$/environ)
_LXD_EOF
fi
"""

# Run by the shell that execs the app (no single quotes: it is also inside 'sh -c').
_ENV_FIX = "; ".join(
    [
        "unset " + " ".join(SHELL_OWNED),
        *(f'[ -z "${{_lxd_k_{n}+x}}" ] || export {n}="$_lxd_k_{n}"' for n in SHELL_OWNED),
        "unset " + " ".join(f"_lxd_k_{n}" for n in SHELL_OWNED),
    ]
)

_INIT_SETUP = r"""@BB@ mkdir -p /dev/shm 2>/dev/null
@BB@ grep -q ' /dev/shm ' /proc/mounts 2>/dev/null \
	|| @BB@ mount -t tmpfs -o rw,nosuid,nodev,mode=1777 shm /dev/shm 2>/dev/null \
	|| _lxd_log 'cannot mount tmpfs on /dev/shm'
# A container is not a router unless it says so.
{ echo 0 > /proc/sys/net/ipv4/ip_forward; } 2>/dev/null
{ echo 0 > /proc/sys/net/ipv6/conf/all/forwarding; } 2>/dev/null
# Docker (>= 20.10, moby#41030) lets every container user bind ports below 1024;
# images that run as a non-root user on port 80 rely on it.
{ echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start; } 2>/dev/null
@BB@ ip link set lo up 2>/dev/null
if [ -e /sys/class/net/eth0 ]; then
	# In the background: boot never waits for DHCP.
	@BB@ ip link set eth0 up 2>/dev/null
	@BB@ udhcpc -f -i eth0 -s @SCRIPT@ -x "hostname:$(@BB@ hostname)" </dev/null &
fi
"""

_INIT_LOOKUP = r"""# PATH lookup like runc; busybox would otherwise prefer its own applets.
_lxd_name=$1
_lxd_cmd=
case $1 in
*/*) _lxd_cmd=$1 ;;
*)
	_lxd_p=$PATH:
	while [ -n "$_lxd_p" ]; do
		_lxd_d=${_lxd_p%%:*}
		_lxd_p=${_lxd_p#*:}
		if [ -f "${_lxd_d:-.}/$1" ] && [ -x "${_lxd_d:-.}/$1" ]; then
			_lxd_cmd=${_lxd_d:-.}/$1
			break
		fi
	done
	;;
esac
if [ -z "$_lxd_cmd" ]; then
	_lxd_log "$1: executable file not found in \$PATH"
	exit 127
fi
shift
"""

_FALLBACK = r"""		# Started with '&', the child may still ignore SIGINT/SIGQUIT (POSIX rule).
		_lxd_ign=$(@BB@ sed -n 's/^SigIgn:[[:space:]]*//p' "/proc/$_lxd_child/status" 2>/dev/null)
		if [ -n "$_lxd_ign" ] && [ $((0x$_lxd_ign & @MASK@)) -ne 0 ]; then
			_lxd_log "the app ignores SIG$_lxd_sig; sending SIGTERM"
			_lxd_sig=TERM
		fi
"""

_SUPERVISOR = r"""# Supervisor: stay PID 1, forward LXD's stop (SIGPWR) and TERM/INT as the image's
# StopSignal, reap orphans (ash reaps every child while it waits).
_lxd_stopping=0
_lxd_child=
_lxd_rc=0
_lxd_on_stop() {
	_lxd_stopping=1
	if [ -n "$_lxd_child" ]; then
		_lxd_sig=@SIG@
@FALLBACK@		kill -s "$_lxd_sig" "$_lxd_child" 2>/dev/null
	fi
}
trap _lxd_on_stop PWR TERM INT
_lxd_delay=@START@
while [ "$_lxd_stopping" = 0 ]; do
	read -r _lxd_t0 _lxd_x </proc/uptime 2>/dev/null || _lxd_t0=0
	( @LAUNCH@ ) &
	_lxd_child=$!
	while :; do
		wait "$_lxd_child"
		_lxd_rc=$?
		[ "$_lxd_rc" -le 128 ] && break
		# >128: killed by a signal, or our trap interrupted the wait.
		kill -0 "$_lxd_child" 2>/dev/null && continue
		wait "$_lxd_child" 2>/dev/null
		_lxd_x=$?
		[ "$_lxd_x" -ne 127 ] && _lxd_rc=$_lxd_x
		break
	done
	_lxd_child=
	[ "$_lxd_stopping" = 0 ] || break
	case @POLICY@ in
	no) break ;;
	on-failure) [ "$_lxd_rc" -eq 0 ] && break ;;
	esac
	read -r _lxd_t1 _lxd_x </proc/uptime 2>/dev/null || _lxd_t1=0
	[ $((${_lxd_t1%.*} - ${_lxd_t0%.*})) -ge @RESET@ ] && _lxd_delay=@START@
	_lxd_secs=$((_lxd_delay / 10)).$((_lxd_delay % 10))
	_lxd_log "the app exited with status $_lxd_rc; restarting in ${_lxd_secs}s"
	@BB@ sleep "$_lxd_secs" &
	wait $!
	_lxd_delay=$((_lxd_delay * 2))
	[ "$_lxd_delay" -gt @CAP@ ] && _lxd_delay=@CAP@
done
exit "$_lxd_rc"
"""
