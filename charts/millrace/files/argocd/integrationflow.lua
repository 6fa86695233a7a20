-- Argo CD health check for millrace.dev/v1alpha1 IntegrationFlow (docs/argocd-health.md).
-- Argo CD runs it without Lua's standard libraries, so it uses base functions only.
-- First match wins:
--   1. the operator has not yet written status for metadata.generation -> Progressing
--   2. ReconciliationPaused is True                                    -> Suspended
--   3. spec.suspend is true                                            -> Suspended
--   4. ReleaseVerified is False (the live spec is not the release)     -> Degraded
--   5. Ready is True                                                   -> Healthy
--   6. Ready is missing or Unknown                                     -> Progressing
--   7. Ready is False because it is still converging                   -> Progressing
--   8. Ready is False for any other reason                             -> Degraded

-- Ready=False reasons that clear on their own: an earlier condition is still being worked on, or
-- workers are rolling out a new revision. RolloutStuck is not one of them.
local converging = { Blocked = true, RollingOut = true }

local function find(conditions, wanted)
  for _, condition in ipairs(conditions or {}) do
    if condition.type == wanted then
      return condition
    end
  end
  return nil
end

-- "REASON: message", or whichever of the two is set, or the fallback.
local function describe(condition, fallback)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  elseif message ~= "" then
    return message
  elseif reason ~= "" then
    return reason
  end
  return fallback
end

-- The condition's message, or else describe().
local function text(condition, fallback)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return describe(condition, fallback)
end

local generation = (obj.metadata or {}).generation or 0
local status = obj.status
if status == nil or status.observedGeneration == nil or status.observedGeneration < generation then
  return { status = "Progressing", message = "waiting for the operator to observe generation " .. generation }
end

local paused = find(status.conditions, "ReconciliationPaused")
if paused ~= nil and paused.status == "True" then
  return { status = "Suspended", message = text(paused, "reconciliation is paused") }
end

if obj.spec ~= nil and obj.spec.suspend == true then
  return { status = "Suspended", message = "spec.suspend is true: the flow runs no workers" }
end

local verified = find(status.conditions, "ReleaseVerified")
if verified ~= nil and verified.status == "False" then
  return { status = "Degraded", message = text(verified, "the live spec is not the promoted release") }
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  return { status = "Progressing", message = "waiting for the Ready condition" }
end
if ready.status == "True" then
  local message = ready.message or ""
  local release = status.release
  if release ~= nil and release.ref ~= nil and release.ref ~= "" then
    if message == "" then
      message = "release " .. release.ref
    else
      message = message .. " (release " .. release.ref .. ")"
    end
  end
  return { status = "Healthy", message = message }
end
if ready.status ~= "False" or converging[ready.reason or ""] then
  return { status = "Progressing", message = describe(ready, "waiting for the Ready condition") }
end
return { status = "Degraded", message = describe(ready, "Ready is False") }
