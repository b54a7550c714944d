"""The circuit breaker around the scraper, shared by every worker and host through Redis.

Every transition happens inside one Lua script, so concurrent workers never lose an update (the
old port read, modified and wrote JSON). Time is Redis's own clock, so hosts with skewed clocks
agree. States: closed -> (threshold consecutive failures) -> open -> (open_seconds later, on the
next call) -> half_open, which admits at most `max_trials` calls at once; `successes_to_close`
successes close it, any failure reopens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import redis

from app.timeutil import iso_from_epoch

_SCRIPT = """
local k = KEYS[1]
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local open_ms = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local max_trials = tonumber(ARGV[5])
local trial_ttl_ms = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local f = redis.call('HMGET', k, 'state', 'failures', 'successes', 'opened_at', 'trials', 'trial_at')
local state = f[1] or 'closed'
local failures = tonumber(f[2]) or 0
local successes = tonumber(f[3]) or 0
local opened_at = tonumber(f[4]) or 0
local trials = tonumber(f[5]) or 0
local trial_at = tonumber(f[6]) or 0

local function move(to)
  state = to
  redis.call('HSET', k, 'state', to, 'last_state_change', now)
end

if op == 'allow' then
  if state == 'open' then
    if now - opened_at < open_ms then
      return {0, state, open_ms - (now - opened_at)}
    end
    move('half_open')
    trials = 0
    redis.call('HSET', k, 'successes', 0, 'trials', 0)
  end
  if state == 'half_open' then
    -- a trial whose worker died never reports back: its permit lapses after trial_ttl_ms
    if trials >= max_trials and now - trial_at > trial_ttl_ms then trials = 0 end
    if trials >= max_trials then return {0, state, trial_ttl_ms} end
    redis.call('HSET', k, 'trials', trials + 1, 'trial_at', now)
    return {1, state, 0}
  end
  return {1, state, 0, failures}
elseif op == 'success' then
  if state == 'half_open' then
    successes = successes + 1
    if successes >= need then
      move('closed')
      redis.call('HSET', k, 'failures', 0, 'successes', 0, 'trials', 0)
    else
      redis.call('HSET', k, 'successes', successes, 'trials', math.max(trials - 1, 0))
    end
  elseif state == 'closed' and failures > 0 then
    redis.call('HSET', k, 'failures', 0)
  end
  return {1, state, 0}
elseif op == 'failure' then
  redis.call('HSET', k, 'last_failure', now)
  if state == 'half_open' then
    move('open')
    redis.call('HSET', k, 'opened_at', now, 'trials', 0, 'successes', 0, 'failures', failures + 1)
  elseif state == 'closed' then
    failures = failures + 1
    redis.call('HSET', k, 'failures', failures)
    if failures >= threshold then
      move('open')
      redis.call('HSET', k, 'opened_at', now)
    end
  end
  return {1, state, 0}
end
return redis.error_reply('unknown breaker op ' .. op)
"""


class BreakerOpen(Exception):
    """The breaker refused the call; `retry_in` seconds is when it may admit one again."""

    def __init__(self, state: str, retry_in: float):
        super().__init__(f"circuit breaker {state}: scraper calls paused for {retry_in:.0f}s")
        self.state = state
        self.retry_in = retry_in


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 10
    open_seconds: float = 120.0
    successes_to_close: int = 3
    max_trials: int = 3
    # A half-open trial permit is given back after this long even if its call never reported
    # (worker killed). Longer than any scraper call.
    trial_timeout_seconds: float = 150.0


class CircuitBreaker:
    def __init__(self, client: redis.Redis, key: str, policy: BreakerPolicy = BreakerPolicy()):
        self.client = client
        self.key = key
        self.policy = policy
        self._script = client.register_script(_SCRIPT)

    def _args(self, op: str) -> list:
        p = self.policy
        return [op, p.failure_threshold, int(p.open_seconds * 1000), p.successes_to_close,
                p.max_trials, int(p.trial_timeout_seconds * 1000)]

    def _run(self, op: str, first: Callable | None = None) -> list:
        if first is None:
            return self._script(keys=[self.key], args=self._args(op))
        # `first`'s commands and the script in one round trip (not the Script object in the
        # pipeline: redis-py would ask SCRIPT EXISTS first, a round trip of its own)
        for attempt in (1, 2):
            with self.client.pipeline(transaction=False) as pipe:
                first(pipe)
                pipe.evalsha(self._script.sha, 1, self.key, *self._args(op))
                try:
                    return pipe.execute()[-1]
                except redis.exceptions.NoScriptError:
                    if attempt == 2:
                        raise
                    # a Redis restarted since the script was loaded: `first` must bear running twice
                    self.client.script_load(_SCRIPT)
        raise AssertionError("unreachable")

    def allow(self, first: Callable | None = None) -> bool:
        """Take permission for one call, or raise BreakerOpen. Returns whether a success of
        this call must be reported: not when the breaker was closed with no failure counted, as
        on nearly every call, where record_success would change nothing (one round trip less
        per check, issue 20). A failure counted by another worker meanwhile then stays counted:
        the breaker can only open sooner for it, never later.

        `first(pipeline)`: commands of the caller's sent before the script in the same round trip
        (issue 30: the check's running marker); they run whatever the breaker answers."""
        allowed, state, retry_ms, *failures = self._run("allow", first)
        if not int(allowed):
            raise BreakerOpen(_text(state), int(retry_ms) / 1000)
        return _text(state) != "closed" or not failures or int(failures[0]) > 0

    def record_success(self) -> None:
        self._run("success")

    def record_failure(self) -> None:
        self._run("failure")

    def status(self) -> dict:
        raw = {_text(k): _text(v) for k, v in self.client.hgetall(self.key).items()}

        return {
            "state": raw.get("state", "closed"),
            "failure_count": int(raw.get("failures", 0)),
            "success_count": int(raw.get("successes", 0)),
            "half_open_trials": int(raw.get("trials", 0)),
            "last_failure": iso_from_epoch(_sec(raw, "last_failure")),
            "last_state_change": iso_from_epoch(_sec(raw, "last_state_change")),
            "opened_at": iso_from_epoch(_sec(raw, "opened_at")) if raw.get("state") == "open" else None,
        }

    def reset(self) -> None:
        self.client.delete(self.key)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sec(raw: dict, name: str) -> float | None:
    """A millisecond field of the hash as epoch seconds."""
    return int(raw[name]) / 1000 if raw.get(name) else None
