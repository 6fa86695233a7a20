// The harness the argocd_health test uses to run Millrace's Argo CD health checks in gopher-lua,
// the Lua engine Argo CD embeds. Not part of any Millrace binary.
module millrace.dev/hack/argocd-health

go 1.22

require github.com/yuin/gopher-lua v1.1.1
