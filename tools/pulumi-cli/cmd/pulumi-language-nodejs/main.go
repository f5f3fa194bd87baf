// Command pulumi-language-nodejs is a small, self-written Node.js language host for the Pulumi CLI v3.259.0.
//
// Why this exists: the upstream language host lives in its own Go module, and the Go module proxy this
// project can reach does not serve it at any version:
//
//	$ GOFLAGS=-mod=mod go list -m github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3@v3.0.0-20260819165155-0ac56e876614
//	go: github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3@v3.0.0-20260819165155-0ac56e876614: reading
//	https://<GOPROXY>/github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3/@v/v3.0.0-20260819165155-0ac56e876614.info: 403 Forbidden
//		server response: This module version is not available.
//
// (v3.0.0-20260819165155-0ac56e876614 is the pseudo-version of commit 0ac56e876614, tag v3.259.0.)
// `@latest` fails the same way (reading .../pulumi-language-nodejs/v3/@v/list: 403 Forbidden). The modules
// github.com/pulumi/pulumi/sdk/v3 and pkg/v3 at v3.259.0 are available, so this host is built on their protocol
// types and codegen packages.
//
// What it does (see pulumirpc.LanguageRuntimeServer in sdk/v3/proto/go):
//   - prints its gRPC port as the first stdout line; the engine passes optional logging/tracing flags and the
//     engine address as the last positional argument (pkg/v3/resource/plugin: buildArgsForNewPlugin);
//   - Run spawns `node <node_modules>/@pulumi/pulumi/cmd/run <flags> <program>` (the runner shipped in the npm
//     package), passing config through PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS and TypeScript settings through
//     PULUMI_NODEJS_* variables; the child's stdout/stderr go to our own, which the engine shows to the user;
//   - RunPlugin does the same with `@pulumi/pulumi/cmd/run-plugin` for providers written in TypeScript;
//   - InstallDependencies runs `npm install` (or the `packagemanager` option) and streams its output;
//   - GeneratePackage binds a schema and runs the pkg/v3/codegen/nodejs generator (`pulumi package gen-sdk`);
//   - GenerateProgram / GenerateProject (generate.go) bind PCL against the engine's schema loader and run the
//     pkg/v3/codegen/nodejs program generator (`pulumi import` code output, `pulumi convert --language typescript`);
//   - GetRequiredPackages reports the "pulumi" blocks of package.json files among the program's dependencies.
//
// Everything else (Pack, Link, Template, RuntimeOptionsPrompts) answers Unimplemented through the embedded
// UnimplementedLanguageRuntimeServer.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	nodegen "github.com/pulumi/pulumi/pkg/v3/codegen/nodejs"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

const (
	// defaultVersion is used when the build did not set sdk/v3/go/common/version.Version with -ldflags -X
	// (scripts/ensure-pulumi.sh does, with the version pinned in go.mod).
	defaultVersion = "3.259.0"
	// Exit code used by @pulumi/pulumi's runner when it has already shown the error to the user.
	exitAlreadyReported = 32
)

// hostVersion is the version we report: the CLI's version, as stamped at build time.
func hostVersion() string {
	if v := strings.TrimPrefix(version.Version, "v"); v != "" {
		return v
	}
	return defaultVersion
}

func main() {
	// Flags the engine may pass before the engine address: --logtostderr, -v=N, --tracing URL, -root DIR.
	// Unknown flags are ignored so newer engines do not break us; the last positional is the engine address.
	// `--version` prints the version and exits (upstream hosts have no such flag; it is ours).
	var engineAddress, tracing string
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		switch {
		case name == "version": // used by scripts/ensure-pulumi.sh to check a binary found on PATH
			fmt.Println("v" + hostVersion())
			return
		case !strings.HasPrefix(a, "-"):
			engineAddress = a
		case name == "tracing" || name == "root":
			if i+1 < len(args) {
				if name == "tracing" {
					tracing = args[i+1]
				}
				i++
			}
		case strings.HasPrefix(name, "tracing="):
			tracing = strings.TrimPrefix(name, "tracing=")
		}
	}

	host := &nodeHost{engineAddress: engineAddress, tracing: tracing}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(s *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(s, host)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: could not start gRPC server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port) // first stdout line: the port, as the engine expects
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: server stopped: %v\n", err)
		os.Exit(1)
	}
}

type nodeHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu            sync.Mutex
	engineAddress string
	tracing       string
}

func (h *nodeHost) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *nodeHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: hostVersion()}, nil
}

func (h *nodeHost) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil // child processes end with their request's context
}

// ---- helpers ---------------------------------------------------------------------------------------------

// options returns the `runtime.options` block of Pulumi.yaml as a plain map.
func options(info *pulumirpc.ProgramInfo) map[string]any {
	if info.GetOptions() == nil {
		return map[string]any{}
	}
	return info.GetOptions().AsMap()
}

func programDir(info *pulumirpc.ProgramInfo, fallback string) string {
	if d := info.GetProgramDirectory(); d != "" {
		return d
	}
	return fallback
}

// findUp looks for rel (e.g. "node_modules/@pulumi/pulumi/cmd/run") in dir and its parents, like Node does.
func findUp(dir, rel string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("could not find %s in %s or any parent directory; "+
				"has `npm install` been run (the program must depend on @pulumi/pulumi)?", rel, dir)
		}
	}
}

type packageJSON struct {
	Name            string                  `json:"name"`
	Version         string                  `json:"version"`
	Dependencies    map[string]string       `json:"dependencies"`
	DevDependencies map[string]string       `json:"devDependencies"`
	Pulumi          plugin.PulumiPluginJSON `json:"pulumi"`
}

func readPackageJSON(path string) (*packageJSON, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p packageJSON
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return &p, nil
}

// nodeEnv builds the environment shared by Run and RunPlugin: TypeScript settings from the project options.
func nodeEnv(base []string, opts map[string]any) []string {
	env := append([]string{}, base...)
	ts := true
	if v, ok := opts["typescript"].(bool); ok {
		ts = v
	}
	env = append(env, "PULUMI_NODEJS_TYPESCRIPT="+strconv.FormatBool(ts))
	if v, ok := opts["tsconfig"].(string); ok && v != "" && os.Getenv("PULUMI_NODEJS_TSCONFIG_PATH") == "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+v)
	}
	return env
}

func nodeArgs(opts map[string]any) []string {
	if v, ok := opts["nodeargs"].(string); ok {
		return strings.Fields(v)
	}
	return nil
}

// exitCode extracts the exit status from a finished command (-1 when killed by a signal or not started).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1
		}
		return ee.ExitCode()
	}
	return -1
}

// ---- Run -------------------------------------------------------------------------------------------------

func (h *nodeHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	pwd := programDir(req.GetInfo(), req.GetPwd())
	runner, err := findUp(pwd, filepath.Join("node_modules", "@pulumi", "pulumi", "cmd", "run"))
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	program := req.GetProgram()
	if ep := req.GetInfo().GetEntryPoint(); ep != "" {
		program = ep
	}
	if program == "" {
		program = "."
	}

	h.mu.Lock()
	engine, tracing := h.engineAddress, h.tracing
	h.mu.Unlock()

	opts := options(req.GetInfo())
	args := append(nodeArgs(opts), runner, "--monitor="+req.GetMonitorAddress())
	if engine != "" {
		args = append(args, "--engine="+engine)
	}
	if req.GetOrganization() != "" {
		args = append(args, "--organization="+req.GetOrganization())
	}
	args = append(args, "--project="+req.GetProject(), "--stack="+req.GetStack(), "--pwd="+pwd)
	if root := req.GetInfo().GetRootDirectory(); root != "" {
		args = append(args, "--root-directory="+root)
	}
	if req.GetDryRun() {
		args = append(args, "--dry-run")
	}
	if req.GetParallel() > 0 {
		args = append(args, "--parallel="+strconv.Itoa(int(req.GetParallel())))
	}
	if tracing != "" {
		args = append(args, "--tracing="+tracing)
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	// Config travels as JSON in the environment: {"project:key": "value"} and ["project:key", ...].
	config := req.GetConfig()
	if config == nil {
		config = map[string]string{} // the runner expects an object, never null
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env := nodeEnv(os.Environ(), opts)
	env = append(env, "PULUMI_CONFIG="+string(cfg), "PULUMI_CONFIG_SECRET_KEYS="+string(secrets))

	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = pwd
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // the engine turns our output into diagnostics
	runErr := cmd.Run()
	switch code := exitCode(runErr); {
	case runErr == nil:
		return &pulumirpc.RunResponse{}, nil
	case code == exitAlreadyReported:
		return &pulumirpc.RunResponse{Bail: true}, nil
	case code > 0:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", code)}, nil
	default:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program run failed: %v", runErr)}, nil
	}
}

// ---- RunPlugin (providers written in TypeScript, PulumiPlugin.yaml runtime: nodejs) ----------------------

func (h *nodeHost) RunPlugin(req *pulumirpc.RunPluginRequest,
	srv grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	dir := programDir(req.GetInfo(), req.GetPwd())
	runner, err := findUp(dir, filepath.Join("node_modules", "@pulumi", "pulumi", "cmd", "run-plugin"))
	if err != nil {
		return err
	}
	opts := options(req.GetInfo())
	// "--" keeps the plugin's own flags away from the runner's argument parser.
	args := append(nodeArgs(opts), runner, "--", dir)
	args = append(args, req.GetArgs()...)
	cmd := exec.CommandContext(srv.Context(), "node", args...)
	cmd.Dir = req.GetPwd()
	cmd.Env = nodeEnv(req.GetEnv(), opts)
	var mu sync.Mutex // gRPC streams do not allow concurrent Send
	send := func(r *pulumirpc.RunPluginResponse) error { mu.Lock(); defer mu.Unlock(); return srv.Send(r) }
	cmd.Stdout = writerFunc(func(b []byte) error {
		return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: b}})
	})
	cmd.Stderr = writerFunc(func(b []byte) error {
		return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: b}})
	})
	runErr := cmd.Run()
	code := 0
	if runErr != nil {
		code = exitCode(runErr)
	}
	return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}

// writerFunc adapts a callback to io.Writer; it copies the buffer since exec reuses it.
type writerFunc func([]byte) error

func (f writerFunc) Write(b []byte) (int, error) {
	if err := f(append([]byte(nil), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

var _ io.Writer = writerFunc(nil)

// ---- InstallDependencies ---------------------------------------------------------------------------------

func (h *nodeHost) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	srv grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	dir := programDir(req.GetInfo(), req.GetDirectory()) //nolint:staticcheck // Directory is the old field
	pm := "npm"
	if v, ok := options(req.GetInfo())["packagemanager"].(string); ok && v != "" {
		pm = v
	}
	var mu sync.Mutex
	send := func(r *pulumirpc.InstallDependenciesResponse) error { mu.Lock(); defer mu.Unlock(); return srv.Send(r) }
	_ = send(&pulumirpc.InstallDependenciesResponse{Stdout: []byte(fmt.Sprintf("Installing dependencies with %s in %s\n", pm, dir))})
	cmd := exec.CommandContext(srv.Context(), pm, "install")
	cmd.Dir = dir
	cmd.Stdout = writerFunc(func(b []byte) error { return send(&pulumirpc.InstallDependenciesResponse{Stdout: b}) })
	cmd.Stderr = writerFunc(func(b []byte) error { return send(&pulumirpc.InstallDependenciesResponse{Stderr: b}) })
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("`%s install` failed in %s: %w", pm, dir, err)
	}
	return nil
}

// ---- Required packages / dependencies --------------------------------------------------------------------

// walkDeps visits the program's dependencies (and theirs), resolving each from node_modules like Node does.
func walkDeps(dir string, visit func(pkgDir string, p *packageJSON)) error {
	root, err := readPackageJSON(filepath.Join(dir, "package.json"))
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var walk func(from string, p *packageJSON)
	walk = func(from string, p *packageJSON) {
		names := make([]string, 0, len(p.Dependencies)+len(p.DevDependencies))
		for n := range p.Dependencies {
			names = append(names, n)
		}
		if from == dir { // devDependencies only count for the program itself
			for n := range p.DevDependencies {
				names = append(names, n)
			}
		}
		for _, n := range names {
			pj, err := findUp(from, filepath.Join("node_modules", n, "package.json"))
			if err != nil || seen[pj] {
				continue
			}
			seen[pj] = true
			dep, err := readPackageJSON(pj)
			if err != nil {
				continue
			}
			visit(filepath.Dir(pj), dep)
			walk(filepath.Dir(pj), dep)
		}
	}
	walk(dir, root)
	return nil
}

var semverLike = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$`)

func pluginOf(p *packageJSON) *pulumirpc.PackageDependency {
	if !p.Pulumi.Resource {
		return nil
	}
	name := p.Pulumi.Name
	if name == "" { // "@pulumi/aws" -> "aws", "@acme/foo" -> "acme/foo"
		name = strings.TrimPrefix(strings.TrimPrefix(p.Name, "@pulumi/"), "@")
	}
	version := p.Pulumi.Version
	if version == "" {
		version = p.Version
	}
	if !semverLike.MatchString(version) {
		version = "" // e.g. the "${VERSION}" placeholder of an unpublished generated SDK: any version will do
	} else if !strings.HasPrefix(version, "v") {
		version = "v" + version
	}
	dep := &pulumirpc.PackageDependency{Name: name, Kind: "resource", Version: version, Server: p.Pulumi.Server}
	if pp := p.Pulumi.Parameterization; pp != nil {
		dep.Parameterization = &pulumirpc.PackageParameterization{Name: pp.Name, Version: pp.Version, Value: pp.Value}
	}
	return dep
}

func (h *nodeHost) GetRequiredPackages(_ context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	var pkgs []*pulumirpc.PackageDependency
	_ = walkDeps(programDir(req.GetInfo(), ""), func(_ string, p *packageJSON) {
		if d := pluginOf(p); d != nil {
			pkgs = append(pkgs, d)
		}
	}) // a missing package.json/node_modules just means "no plugins"; Run reports the real problem
	return &pulumirpc.GetRequiredPackagesResponse{Packages: pkgs}, nil
}

func (h *nodeHost) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	info := req.GetInfo()
	if info == nil {
		info = &pulumirpc.ProgramInfo{ProgramDirectory: req.GetPwd()}
	}
	resp, _ := h.GetRequiredPackages(ctx, &pulumirpc.GetRequiredPackagesRequest{Info: info})
	plugins := make([]*pulumirpc.PluginDependency, 0, len(resp.Packages))
	for _, p := range resp.Packages {
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: p.Name, Kind: p.Kind, Version: p.Version, Server: p.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *nodeHost) GetProgramDependencies(_ context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	dir := programDir(req.GetInfo(), req.GetPwd())
	root, err := readPackageJSON(filepath.Join(dir, "package.json"))
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "reading package.json: %v", err)
	}
	var deps []*pulumirpc.DependencyInfo
	add := func(name, want string) {
		version := want // fall back to the declared range when not installed
		if pj, err := findUp(dir, filepath.Join("node_modules", name, "package.json")); err == nil {
			if p, err := readPackageJSON(pj); err == nil {
				version = p.Version
			}
		}
		deps = append(deps, &pulumirpc.DependencyInfo{Name: name, Version: version})
	}
	for n, v := range root.Dependencies {
		add(n, v)
	}
	for n, v := range root.DevDependencies {
		add(n, v)
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

func (h *nodeHost) About(ctx context.Context, _ *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node not found on PATH: %v", err)
	}
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("running node --version: %w", err)
	}
	return &pulumirpc.AboutResponse{Executable: node, Version: strings.TrimPrefix(strings.TrimSpace(string(out)), "v")}, nil
}

// ---- GeneratePackage (`pulumi package gen-sdk --language nodejs`) ----------------------------------------

func (h *nodeHost) GeneratePackage(_ context.Context, req *pulumirpc.GeneratePackageRequest,
) (*pulumirpc.GeneratePackageResponse, error) {
	var spec schema.PackageSpec
	if err := json.Unmarshal([]byte(req.GetSchema()), &spec); err != nil {
		return nil, fmt.Errorf("parsing schema: %w", err)
	}
	var loader schema.ReferenceLoader
	if t := req.GetLoaderTarget(); t != "" {
		client, err := schema.NewLoaderClient(t) // resolves referenced packages through the engine
		if err != nil {
			return nil, err
		}
		defer client.Close()
		loader = schema.NewCachedLoader(client)
	}
	pkg, diags, err := schema.BindSpec(spec, loader, schema.ValidationOptions{AllowDanglingReferences: true})
	if err != nil {
		return nil, err
	}
	rpcDiags := plugin.HclDiagnosticsToRPCDiagnostics(diags)
	if diags.HasErrors() {
		return &pulumirpc.GeneratePackageResponse{Diagnostics: rpcDiags}, nil
	}
	files, err := nodegen.GeneratePackage("pulumi-language-nodejs", pkg,
		req.GetExtraFiles(), req.GetLocalDependencies(), req.GetLocal(), loader)
	if err != nil {
		return nil, err
	}
	for name, data := range files {
		out := filepath.Join(req.GetDirectory(), name)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(out, data, 0o644); err != nil {
			return nil, err
		}
	}
	return &pulumirpc.GeneratePackageResponse{Diagnostics: rpcDiags}, nil
}
