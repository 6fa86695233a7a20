-- Argo CD health check for millrace.dev/v1alpha1 EventContract (docs/argocd-health.md).
-- Argo CD runs it without Lua's standard libraries, so it uses base functions only.
-- First match wins:
--   1. the operator has not yet written status for metadata.generation -> Progressing
--   2. ReconciliationPaused is True                                    -> Suspended
--   3. Ready is True                                                   -> Healthy
--   4. Ready is missing or Unknown                                     -> Progressing
--   5. Ready is False (VersionRejected, NoAcceptedVersion)             -> Degraded
-- A contract's Ready=False never clears on its own: a version must be fixed or accepted.

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

local ready = find(status.conditions, "Ready")
if ready == nil then
  return { status = "Progressing", message = "waiting for the Ready condition" }
end
if ready.status == "True" then
  return { status = "Healthy", message = ready.message or "" }
end
if ready.status ~= "False" then
  return { status = "Progressing", message = describe(ready, "waiting for the Ready condition") }
end
return { status = "Degraded", message = describe(ready, "Ready is False") }
