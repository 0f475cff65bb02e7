-- wrk script: cycle through a list of URL paths read from a file, and print the summary
-- as one JSON line at the end (parsed by run.sh).
--
--   wrk -t2 -c64 -d10s --latency -s bench/paths.lua http://127.0.0.1:PORT -- PATHS_FILE
--
-- Requests are pre-formatted once per thread so the Lua side costs as little as possible;
-- each thread starts at a different offset so the threads do not ask for the same files in
-- lockstep. No response() callback is defined on purpose: defining one makes wrk parse every
-- header in Lua and slows the load generator down for both servers alike.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("thread_id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   local file = args[1]
   if file == nil then
      error("paths.lua: pass the paths file after --")
   end
   reqs = {}
   for line in io.lines(file) do
      if line ~= "" then
         table.insert(reqs, wrk.format("GET", line))
      end
   end
   if #reqs == 0 then
      error("paths.lua: no paths in " .. file)
   end
   -- Spread the threads over the list (thread states do not share globals, so use a
   -- large prime stride rather than the thread count).
   idx = (thread_id * 104729) % #reqs
end

function request()
   idx = idx + 1
   if idx > #reqs then
      idx = 1
   end
   return reqs[idx]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
      "\"err_connect\": %d, \"err_read\": %d, \"err_write\": %d, \"err_status\": %d, \"err_timeout\": %d, " ..
      "\"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, \"max_us\": %d}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
