-- Argo CD health check for automation.ona.com/TaskRun.
-- Reads only the conditions the operator writes (Succeeded, Stalled, RemoteReachable),
-- status.phase and the last line of status.logTail for the message, and
-- spec.desiredPhase to tell a stop the spec asked for from one it did not. Argo CD runs this on gopher-lua: Lua 5.1 only. Any field
-- may be missing or of the wrong type on a half-written object; none of that errors.

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function findCondition(conditions, conditionType)
  for _, condition in ipairs(conditions) do
    if type(condition) == "table" and condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  local reason = text(condition.reason)
  local message = text(condition.message)
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

-- The last non-blank line of status.logTail (the end of a failed run's log), at most
-- 200 characters of its end; "" when there is none.
local function lastLogLine(tail)
  if type(tail) ~= "string" then
    return ""
  end
  local last = ""
  for line in string.gmatch(tail, "[^\n]+") do
    if string.find(line, "%S") then
      last = line
    end
  end
  if string.len(last) > 200 then
    last = "..." .. string.sub(last, -200)
  end
  return last
end

local function health(obj)
  if type(obj) ~= "table" then
    return { status = "Progressing", message = "Waiting for the operator" }
  end
  local spec = obj.spec
  if type(spec) ~= "table" then
    spec = {}
  end
  local status = obj.status
  -- Just created: the operator has not written any condition yet. This must not
  -- read as Healthy, or a sync would finish before the run has even started.
  if type(status) ~= "table" or type(status.conditions) ~= "table"
      or #status.conditions == 0 then
    return { status = "Progressing", message = "Waiting for the operator" }
  end
  local conditions = status.conditions

  local succeeded = findCondition(conditions, "Succeeded")
  if succeeded ~= nil and succeeded.status == "True" then
    return { status = "Healthy", message = describe(succeeded, "TaskRun succeeded") }
  end
  if succeeded ~= nil and succeeded.status == "False" then
    if succeeded.reason == "Stopped" and spec.desiredPhase == "STOPPED" then
      return { status = "Healthy", message = "Stopped as spec.desiredPhase asked" }
    end
    local message = describe(succeeded, "TaskRun did not succeed")
    local logLine = lastLogLine(status.logTail)
    if logLine ~= "" then
      message = message .. "; last log line: " .. logLine
    end
    return { status = "Degraded", message = message }
  end

  local stalled = findCondition(conditions, "Stalled")
  if stalled ~= nil and stalled.status == "True" then
    return { status = "Degraded", message = describe(stalled, "TaskRun needs attention") }
  end

  local phase = text(status.phase)
  local message
  if phase == "" then
    message = "Waiting for the first status of the execution"
  else
    message = "Execution phase: " .. phase
  end
  local reachable = findCondition(conditions, "RemoteReachable")
  if reachable ~= nil and reachable.status == "False" then
    message = message .. "; the Ona API is unreachable ("
      .. describe(reachable, "no reason given") .. ")"
  end
  return { status = "Progressing", message = message }
end

return health(obj)
