"""The Lua scripts of the Redis store. Each runs atomically on the server, in one round trip.

Numbers cross into Lua as strings and go back to Redis as the same strings where exactness
matters (``INCRBY key ARGV[...]``): Lua turns large numbers into ``1e+15`` when it formats them.
"""

from __future__ import annotations

# Reply statuses of CHANGE.
APPLIED = 1
DENIED = 0
MISSING = -1
STALE = -2

# Count (op "c": add if within the limit, limit -1 = unlimited) or refund (op "r": subtract, never
# below zero) in one step, mark the counter dirty for the flush, and keep today's history bucket.
#
# KEYS[1] counter, KEYS[2] the tenant's dirty hash, KEYS[3] the tenant's rules hash (see
#         RedisKeys.rules), KEYS[4] today's history bucket (optional: absent when history is off,
#         and for allocations)
# ARGV[1] op, ARGV[2] quantity, ARGV[3] limit, ARGV[4] dirty field,
# ARGV[5] seed ("" = none: reply MISSING if the counter does not exist),
# ARGV[6] expiry as a Unix time ("0" = never),
# ARGV[7] the bucket's dirty field, ARGV[8] the bucket's time to live in seconds (relative: the
#         app's clock decides when the day ends, whatever the server's clock says); "" without
#         a bucket
# ARGV[9] the rules version the limit was read with ("" = not checked): unless the rules hash
#         holds that version, nothing changes and the reply is {STALE, epoch}
# Reply: {status, before, after, seeded}; values as strings (Lua numbers are doubles, inexact
# above 2**53)
#
# The bucket (a hash: n = units counted on the day, t = when this bucket was created) gets what
# the counter got: a count adds the quantity; a refund takes back what the counter gave back,
# never below zero, and only from a bucket that exists (usage of an earlier day stays there).
CHANGE = """
local counter, dirty = KEYS[1], KEYS[2]
local op, quantity, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[9] ~= '' then
  local rules = redis.call('HMGET', KEYS[3], 'v', 'e')
  if rules[1] ~= ARGV[9] then
    return {-2, rules[2] or '0', '0', 0}
  end
end
local seeded = 0
local value = redis.call('GET', counter)
if not value then
  if ARGV[5] == '' then
    return {-1, '0', '0', 0}
  end
  value = ARGV[5]
  if ARGV[6] ~= '0' then
    redis.call('SET', counter, value, 'EXAT', ARGV[6])
  else
    redis.call('SET', counter, value)
  end
  seeded = 1
end
local before = tonumber(value)
local given = ARGV[2]
if op == 'r' then
  if quantity >= before then
    given = value
    redis.call('SET', counter, '0', 'KEEPTTL')
  else
    redis.call('DECRBY', counter, ARGV[2])
  end
else
  if limit >= 0 and before + quantity > limit then
    return {0, value, value, seeded}
  end
  redis.call('INCRBY', counter, ARGV[2])
end
local after = redis.call('GET', counter)
if after ~= value then
  local generation = redis.call('HINCRBY', dirty, '#', 1)
  local bucket = KEYS[4]
  if bucket and op == 'r' then
    local n = redis.call('HGET', bucket, 'n')
    if n then
      if tonumber(n) > tonumber(given) then
        redis.call('HINCRBY', bucket, 'n', '-' .. given)
      else
        redis.call('HSET', bucket, 'n', '0')
      end
    else
      bucket = nil
    end
  elseif bucket then
    if redis.call('EXISTS', bucket) == 0 then
      local now = redis.call('TIME')
      redis.call('HSET', bucket, 't', now[1] .. '.' .. now[2])
      redis.call('EXPIRE', bucket, ARGV[8])
    end
    redis.call('HINCRBY', bucket, 'n', ARGV[2])
  end
  if bucket then
    redis.call('HSET', dirty, ARGV[4], generation, ARGV[7], generation)
  else
    redis.call('HSET', dirty, ARGV[4], generation)
  end
end
return {1, value, after, seeded}
"""

# Copy the tenant's rules version from the database, unless a change moved the epoch since the
# caller read it (it may have read the database before that change committed).
#
# KEYS[1] the tenant's rules hash; ARGV[1] the epoch read with the STALE reply, ARGV[2] the
# version, ARGV[3] seconds the copy is kept
# Reply: 1 when copied
SET_RULES_VERSION = """
if (redis.call('HGET', KEYS[1], 'e') or '0') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'e', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# A change of the tenant's rules committed: drop the copied version and move the epoch.
#
# KEYS[1] the tenant's rules hash; ARGV[1] seconds the epoch is kept
RULES_CHANGED = """
redis.call('HDEL', KEYS[1], 'v')
redis.call('HINCRBY', KEYS[1], 'e', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Set a counter to a value (set_usage, resets), marking it dirty.
#
# KEYS[1] counter, KEYS[2] dirty hash
# ARGV[1] value, ARGV[2] dirty field, ARGV[3] expiry as a Unix time ("0" = never)
# Reply: the value before, or false (nil) when the counter did not exist
ASSIGN = """
local counter, dirty = KEYS[1], KEYS[2]
local before = redis.call('GET', counter)
if before then
  redis.call('SET', counter, ARGV[1], 'KEEPTTL')
elseif ARGV[3] ~= '0' then
  redis.call('SET', counter, ARGV[1], 'EXAT', ARGV[3])
else
  redis.call('SET', counter, ARGV[1])
end
local generation = redis.call('HINCRBY', dirty, '#', 1)
redis.call('HSET', dirty, ARGV[2], generation)
return before
"""

# Read a tenant's counters for the flush, first adding what the database counted while Redis
# was unreachable. The applied hash remembers, per row, the baseline (the row's redis_version)
# and the row's value a difference was added for: a flush that crashed after adding and runs
# again adds only what the row counted since (usually nothing), never the same units twice.
#
# KEYS[1] dirty hash, KEYS[2] applied hash, KEYS[3..] counters
# ARGV[1] seconds the applied hash is kept, then per counter 5 values:
#   dirty field, row id, baseline, the row's value, difference to add (value - redis_synced)
# Reply: per counter 2 values: the counter (false = missing), its dirty generation (false = clean)
FLUSH_READ = """
local dirty, applied = KEYS[1], KEYS[2]
local reply = {}
for i = 3, #KEYS do
  local base = (i - 3) * 5 + 1
  local field, row, baseline = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local used, difference = ARGV[base + 4], tonumber(ARGV[base + 5])
  local value = redis.call('GET', KEYS[i])
  if value then
    local done = redis.call('HGET', applied, row)
    if done then
      local done_baseline, done_used = string.match(done, '^([^:]*):(.*)$')
      if done_baseline == baseline then
        difference = tonumber(used) - tonumber(done_used)
      end
    end
    if difference ~= 0 then
      if tonumber(value) + difference < 0 then
        value = '0'
        redis.call('SET', KEYS[i], value, 'KEEPTTL')
      else
        value = string.format('%d', redis.call('INCRBY', KEYS[i], string.format('%d', difference)))
      end
      redis.call('HSET', applied, row, baseline .. ':' .. used)
      redis.call('EXPIRE', applied, ARGV[1])
    end
  end
  reply[#reply + 1] = value or false
  reply[#reply + 1] = redis.call('HGET', dirty, field) or false
end
return reply
"""

# After the database committed: forget dirty marks whose generation did not move since the read
# (a counter changed in the meantime stays dirty for the next flush).
#
# KEYS[1] dirty hash; ARGV: pairs of dirty field and generation
CLEAR_DIRTY = """
local cleared = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    cleared = cleared + 1
  end
end
return cleared
"""

# Read daily history buckets for the flush: each bucket's count and token with its dirty
# generation, atomically, so the mark is cleared only if nothing changed the bucket since.
#
# KEYS[1] dirty hash, KEYS[2..] buckets; ARGV: the buckets' dirty fields, in the same order
# Reply: per bucket 3 values: n, t (false = the bucket is gone), generation (false = clean)
FLUSH_READ_DAYS = """
local reply = {}
for i = 2, #KEYS do
  local bucket = redis.call('HMGET', KEYS[i], 'n', 't')
  reply[#reply + 1] = bucket[1] or false
  reply[#reply + 1] = bucket[2] or false
  reply[#reply + 1] = redis.call('HGET', KEYS[1], ARGV[i - 1]) or false
end
return reply
"""

# Read daily history buckets for a history page: per bucket n and t (false = gone), flat.
READ_DAYS = """
local reply = {}
for i = 1, #KEYS do
  local bucket = redis.call('HMGET', KEYS[i], 'n', 't')
  reply[#reply + 1] = bucket[1] or false
  reply[#reply + 1] = bucket[2] or false
end
return reply
"""
