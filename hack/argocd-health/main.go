// Command argocd-health-check runs one Argo CD resource health check against one object, in the Lua
// engine Argo CD embeds (gopher-lua) and set up as Argo CD sets it up, so that Millrace's checks can
// be tested without an Argo CD installation.
//
//	argocd-health-check SCRIPT.lua < OBJECT.json
//
// As Argo CD's application controller does for a check configured in argocd-cm, it:
//   - opens only the base, package and table libraries: string, math, io and the rest are absent
//     unless resource.customizations.useOpenLibs is set, which Millrace's checks do not need (Argo CD
//     also opens a restricted os library; it is left out here, so a check that uses it fails);
//   - hands the object to the script as the global table obj: a JSON object becomes a table keyed by
//     field name, an array a table indexed from 1, and numbers, strings and booleans their Lua
//     counterparts; null fields are absent;
//   - stops the script after one second;
//   - reads the returned table as {status, message}, and reports a status it does not know as
//     Unknown.
//
// It prints {"status": ..., "message": ...} as one line of JSON. When the script fails, or returns
// anything but such a table, it says why on stderr and exits with status 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// health is what a check returns, as Argo CD decodes it.
type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// knownStatuses are the statuses Argo CD accepts from a health check.
var knownStatuses = map[string]bool{
	"Healthy":     true,
	"Progressing": true,
	"Degraded":    true,
	"Suspended":   true,
	"Missing":     true,
	"Unknown":     true,
}

// scriptTimeout is how long Argo CD lets a check run.
const scriptTimeout = time.Second

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health-check SCRIPT.lua < OBJECT.json")
		os.Exit(2)
	}
	result, err := check(os.Args[1], os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "argocd-health-check: %v\n", err)
		os.Exit(1)
	}
	out, err := json.Marshal(result)
	if err != nil {
		fmt.Fprintf(os.Stderr, "argocd-health-check: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

// check runs the script at scriptPath with the JSON object read from input as obj.
func check(scriptPath string, input io.Reader) (health, error) {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return health{}, err
	}
	var object map[string]any
	if err := json.NewDecoder(input).Decode(&object); err != nil {
		return health{}, fmt.Errorf("stdin must hold one JSON object: %w", err)
	}

	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		if err := L.PCall(1, 0, nil); err != nil {
			return health{}, fmt.Errorf("open the Lua %q library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	L.SetContext(ctx)

	L.SetGlobal("obj", toLua(L, object))
	if err := L.DoString(string(script)); err != nil {
		return health{}, fmt.Errorf("%s failed: %w", scriptPath, err)
	}
	returned, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("%s returned a %s, not a table", scriptPath, L.Get(-1).Type())
	}

	// Through JSON, as Argo CD does, so that a field of the wrong type fails here as it fails there.
	value, err := fromLua(returned)
	if err != nil {
		return health{}, fmt.Errorf("%s returned a table that is not JSON: %w", scriptPath, err)
	}
	encoded, err := json.Marshal(value)
	if err != nil {
		return health{}, err
	}
	var result health
	if err := json.Unmarshal(encoded, &result); err != nil {
		return health{}, fmt.Errorf("%s returned %s, not {status = ..., message = ...}: %w", scriptPath, encoded, err)
	}
	if !knownStatuses[result.Status] {
		fmt.Fprintf(os.Stderr, "argocd-health-check: %s returned status %q, which Argo CD shows as Unknown\n", scriptPath, result.Status)
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return result, nil
}

// toLua converts a value decoded from JSON into the Lua value a health check sees.
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case map[string]any:
		table := L.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	case []any:
		table := L.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(L, item))
		}
		return table
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

// fromLua converts a Lua value into one that encodes as JSON. A table keyed 1..n (or an empty one) is
// an array and a table keyed by strings is an object, the rule of the JSON encoder Argo CD uses.
func fromLua(value lua.LValue) (any, error) {
	switch v := value.(type) {
	case lua.LString:
		return string(v), nil
	case lua.LNumber:
		return float64(v), nil
	case lua.LBool:
		return bool(v), nil
	case *lua.LTable:
		return tableFromLua(v)
	}
	if value == lua.LNil {
		return nil, nil
	}
	return nil, fmt.Errorf("a %s has no JSON form", value.Type())
}

func tableFromLua(table *lua.LTable) (any, error) {
	named := map[string]lua.LValue{}
	indexed := map[int]lua.LValue{}
	var bad error
	table.ForEach(func(key, item lua.LValue) {
		switch k := key.(type) {
		case lua.LString:
			named[string(k)] = item
		case lua.LNumber:
			if i := int(k); lua.LNumber(i) == k && i >= 1 {
				indexed[i] = item
				return
			}
			bad = fmt.Errorf("key %v is not an array index", k)
		default:
			bad = fmt.Errorf("a %s key has no JSON form", key.Type())
		}
	})
	if bad != nil {
		return nil, bad
	}
	if len(named) > 0 && len(indexed) > 0 {
		return nil, fmt.Errorf("a table mixes named and indexed keys")
	}
	if len(named) > 0 {
		object := make(map[string]any, len(named))
		for key, item := range named {
			converted, err := fromLua(item)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			object[key] = converted
		}
		return object, nil
	}
	array := make([]any, len(indexed))
	for i := range array {
		item, ok := indexed[i+1]
		if !ok {
			return nil, fmt.Errorf("an array has no element %d", i+1)
		}
		converted, err := fromLua(item)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i+1, err)
		}
		array[i] = converted
	}
	return array, nil
}
