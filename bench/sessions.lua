-- wrk script for `go run ./bench` (make bench).
--
-- SESSIONS_FILE=<file>: every request carries "Cookie: PHPSESSID=<id>",
--   cycling through the ids in the file (one per line; the bench writes it
--   and stores each id on every memcached node).
-- DELAY_MS=<n>: each connection pauses a random 0..2n ms (mean n) before
--   each request, so every contender gets the same offered load instead of
--   as much as it can take.
--
-- Both are read when the script loads: wrk looks for request() and delay()
-- before it calls init(), so they must be defined (or not) at load time.

local ids = os.getenv("SESSIONS_FILE")
if ids and ids ~= "" then
   local reqs, n, i = {}, 0, 0
   function init(args)
      -- wrk.format is only usable here, once wrk has set the target up.
      for id in io.lines(ids) do
         n = n + 1
         reqs[n] = wrk.format(nil, nil, { Cookie = "PHPSESSID=" .. id })
      end
      if n == 0 then
         error("sessions.lua: no ids in " .. ids)
      end
   end
   function request()
      i = i % n + 1
      return reqs[i]
   end
end

local pace = tonumber(os.getenv("DELAY_MS") or "")
if pace and pace > 0 then
   function delay()
      return math.random(0, 2 * pace)
   end
end
