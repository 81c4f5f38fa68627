"""What software can add to a TEE's memory protection: a process that holds keys or plaintext makes
itself non-dumpable (no core files, no ptrace by same-user processes, /proc/PID/mem closed to them)
and sets its core-file limit to 0, at start, before any key or weight is in memory."""
import ctypes
import resource

PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4


def harden_process() -> dict:
    """Applies both settings where the platform allows (Linux); -> what holds now, for /health."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the core limit still holds
        pass
    return process_hardening()


def process_hardening() -> dict:
    try:
        dumpable = bool(ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):
        dumpable = None
    return {"dumpable": dumpable, "core_file_limit": resource.getrlimit(resource.RLIMIT_CORE)[1]}
