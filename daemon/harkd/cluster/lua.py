"""The Redis Lua scripts behind the shared limits (:mod:`harkd.cluster.limits`): each
runs atomically on Redis's clock, so the replicas' clocks need not agree."""

#: the sliding minute of ``rpm``/``tpm``: a hash of per-second counts; a second's count
#: leaves the window 61 s after that second began (on the safe side of 60 s)
WINDOW = """
local function window(key, nows)
  local all = redis.call('HGETALL', key)
  local sum, oldest = 0, nil
  for i = 1, #all, 2 do
    local s = tonumber(all[i])
    if s <= nows - 61 then
      redis.call('HDEL', key, all[i])
    else
      sum = sum + tonumber(all[i + 1])
      if oldest == nil or s < oldest then oldest = s end
    end
  end
  return sum, oldest
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = tonumber(t[1])
"""

ACQUIRE = WINDOW + """
local maxc, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, member, lease = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= maxc then return -1 end
end
local wait = 0
if rpm > 0 then
  local used, oldest = window(KEYS[2], nows)
  if used >= rpm then wait = math.max(wait, (oldest + 61) * 1000 - now) end
end
if tpm > 0 then
  local used, oldest = window(KEYS[3], nows)
  if used > 0 and used + tokens > tpm then
    wait = math.max(wait, (oldest + 61) * 1000 - now)
  end
end
if wait > 0 then return wait end
if maxc > 0 then
  redis.call('ZADD', KEYS[1], now + lease, member)
  redis.call('PEXPIRE', KEYS[1], lease)
end
if rpm > 0 then
  redis.call('HINCRBY', KEYS[2], nows, 1)
  redis.call('PEXPIRE', KEYS[2], 62000)
end
if tpm > 0 then
  redis.call('HINCRBY', KEYS[3], nows, tokens)
  redis.call('PEXPIRE', KEYS[3], 62000)
end
return 0
"""

RESERVE = WINDOW + """
local rpm, want = tonumber(ARGV[1]), tonumber(ARGV[2])
local used, oldest = window(KEYS[1], nows)
local free = rpm - used
if free <= 0 then return {0, (oldest + 61) * 1000 - now} end
local got = math.min(want, free)
redis.call('HINCRBY', KEYS[1], nows, got)
redis.call('PEXPIRE', KEYS[1], 62000)
return {got, nows}
"""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
redis.call('PEXPIRE', KEYS[1], lease)
return out
"""

RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local delta = tonumber(ARGV[2])
if delta ~= 0 then
  local t = redis.call('TIME')
  redis.call('HINCRBY', KEYS[3], t[1], delta)
  redis.call('PEXPIRE', KEYS[3], 62000)
end
return 1
"""

SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxc, want, member, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local all = redis.call('ZRANGE', KEYS[1], 0, -1)
local used = 0
for i = 1, #all do used = used + tonumber(string.match(all[i], '|(%d+)$')) end
local free = maxc - used
if free <= 0 then return {0, now} end
local got = math.min(want, free)
redis.call('ZADD', KEYS[1], now + lease, member .. '|' .. got)
redis.call('PEXPIRE', KEYS[1], lease)
return {got, now}
"""
