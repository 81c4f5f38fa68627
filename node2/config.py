"""node2's one validated configuration, read from the environment by its entry point."""
from dataclasses import dataclass, field
from typing import Mapping

from shared.config import ConfigError, ModelSettings, TeeSettings, env_float, env_int, env_str


@dataclass(frozen=True)
class Node2Config:
    host: str = "127.0.0.1"
    port: int = 5001
    # node1's step frames on persistent connections (node2/step_socket.py) beside the HTTP route;
    # 0 = none, steps go over HTTP only.
    step_port: int = 5004
    model: ModelSettings = field(default_factory=ModelSettings)
    tee: TeeSettings = field(default_factory=TeeSettings)
    max_sessions: int = 64
    session_idle_s: float = 300.0
    max_frame_bytes: int = 64 << 20

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError("TWINTEE_NODE2_PORT must be a TCP port")
        if not 0 <= self.step_port < 65536 or self.step_port == self.port:
            raise ConfigError("TWINTEE_NODE2_STEP_PORT must be 0 (off) or a TCP port other than TWINTEE_NODE2_PORT")
        if self.max_sessions <= 0 or self.session_idle_s <= 0:
            raise ConfigError("TWINTEE_MAX_SESSIONS and TWINTEE_SESSION_IDLE_S must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Node2Config":
        return cls(
            host=env_str(env, "TWINTEE_NODE2_HOST", "127.0.0.1"),
            port=env_int(env, "TWINTEE_NODE2_PORT", 5001),
            step_port=env_int(env, "TWINTEE_NODE2_STEP_PORT", 5004),
            model=ModelSettings.from_env(env),
            tee=TeeSettings.from_env(env),
            max_sessions=env_int(env, "TWINTEE_MAX_SESSIONS", 64),
            session_idle_s=env_float(env, "TWINTEE_SESSION_IDLE_S", 300.0),
        )
