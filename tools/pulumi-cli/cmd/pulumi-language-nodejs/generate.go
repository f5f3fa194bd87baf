package main

// Program and project generation from PCL (`pulumi import`, `pulumi convert`).
//
// The engine sends PCL (the Pulumi Configuration Language, an HCL dialect) plus the address of a schema loader
// it serves (pkg/v3/resource/plugin: langhost.GenerateProgram / GenerateProject). We bind the PCL against the
// schemas that loader returns and hand the bound program to the TypeScript generator of pkg/v3/codegen/nodejs.
// Binding and generation problems go back as codegen diagnostics, which the engine prints; only failures that are
// not about the program itself (loader unreachable, unreadable input) are returned as gRPC errors.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/pulumi/pulumi/pkg/v3/codegen/hcl2/syntax"
	nodegen "github.com/pulumi/pulumi/pkg/v3/codegen/nodejs"
	"github.com/pulumi/pulumi/pkg/v3/codegen/pcl"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// engineLoader connects to the schema loader the engine serves at target. The caller closes the returned client;
// the cached wrapper is what binding should use, so each package schema is fetched from the engine only once.
func engineLoader(target string) (*schema.LoaderClient, schema.ReferenceLoader, error) {
	if target == "" {
		return nil, nil, errors.New("the engine sent no schema loader address (loader_target)")
	}
	client, err := schema.NewLoaderClient(target)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to the engine's schema loader at %s: %w", target, err)
	}
	return client, schema.NewCachedLoader(client), nil
}

// pclBindOptions are the binder options for a request's `strict` flag. Non-strict binding (what `pulumi import`
// asks for) tolerates references to variables and properties that are not declared in the PCL, such as a parent
// resource or an explicit provider of an imported resource, and downgrades type-check errors to warnings.
func pclBindOptions(strict bool) []pcl.BindOption {
	opts := []pcl.BindOption{pcl.PreferOutputVersionedInvokes}
	if !strict {
		opts = append(opts, pcl.NonStrictBindOptions()...)
	}
	return opts
}

func (h *nodeHost) GenerateProgram(ctx context.Context, req *pulumirpc.GenerateProgramRequest,
) (*pulumirpc.GenerateProgramResponse, error) {
	client, loader, err := engineLoader(req.GetLoaderTarget())
	if err != nil {
		return nil, err
	}
	defer client.Close()

	// Parse every source file (in name order, so diagnostics come out in a stable order).
	parser := syntax.NewParser()
	names := make([]string, 0, len(req.GetSource()))
	for name := range req.GetSource() {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := parser.ParseFile(strings.NewReader(req.GetSource()[name]), name); err != nil {
			return nil, fmt.Errorf("reading PCL source %s: %w", name, err)
		}
	}
	var diags hcl.Diagnostics
	diags = append(diags, parser.Diagnostics...)
	if diags.HasErrors() {
		return &pulumirpc.GenerateProgramResponse{Diagnostics: plugin.HclDiagnosticsToRPCDiagnostics(diags)}, nil
	}

	// BindProgram returns its error diagnostics as err too; those belong in the response, not in a gRPC error.
	program, bindDiags, err := pcl.BindProgramWithContext(ctx, parser.Files, loader, pclBindOptions(req.GetStrict())...)
	diags = append(diags, bindDiags...)
	if err != nil && !bindDiags.HasErrors() {
		return nil, fmt.Errorf("binding PCL program: %w", err)
	}
	if diags.HasErrors() || program == nil {
		if !diags.HasErrors() {
			return nil, errors.New("binding PCL program: the binder returned no program and no error")
		}
		return &pulumirpc.GenerateProgramResponse{Diagnostics: plugin.HclDiagnosticsToRPCDiagnostics(diags)}, nil
	}

	files, genDiags, err := nodegen.GenerateProgram(program)
	if err != nil {
		return nil, fmt.Errorf("generating TypeScript: %w", err)
	}
	diags = append(diags, genDiags...)
	return &pulumirpc.GenerateProgramResponse{
		Source:      files,
		Diagnostics: plugin.HclDiagnosticsToRPCDiagnostics(diags),
	}, nil
}

func (h *nodeHost) GenerateProject(ctx context.Context, req *pulumirpc.GenerateProjectRequest,
) (*pulumirpc.GenerateProjectResponse, error) {
	client, loader, err := engineLoader(req.GetLoaderTarget())
	if err != nil {
		return nil, err
	}
	defer client.Close()

	var project workspace.Project
	if err := json.Unmarshal([]byte(req.GetProject()), &project); err != nil {
		return nil, fmt.Errorf("parsing the project sent by the engine: %w", err)
	}

	// BindDirectory reads every *.pp file of the directory and resolves `component` blocks relative to it.
	program, diags, err := pcl.BindDirectory(req.GetSourceDirectory(), loader, pclBindOptions(req.GetStrict())...)
	if err != nil {
		return nil, fmt.Errorf("binding PCL in %s: %w", req.GetSourceDirectory(), err)
	}
	rpcDiags := plugin.HclDiagnosticsToRPCDiagnostics(diags)
	if diags.HasErrors() || program == nil {
		if !diags.HasErrors() {
			return nil, fmt.Errorf("binding PCL in %s: the binder returned no program", req.GetSourceDirectory())
		}
		return &pulumirpc.GenerateProjectResponse{Diagnostics: rpcDiags}, nil
	}

	// Writes Pulumi.yaml (runtime nodejs), package.json, tsconfig.json, .gitignore and the program itself.
	// forceTsc=false: the project runs TypeScript directly, like `pulumi new typescript`.
	if err := nodegen.GenerateProject(req.GetTargetDirectory(), project, program,
		req.GetLocalDependencies(), false, "nodejs"); err != nil {
		var genDiags hcl.Diagnostics // GenerateProject returns generator error diagnostics as its error
		if errors.As(err, &genDiags) {
			return &pulumirpc.GenerateProjectResponse{
				Diagnostics: append(rpcDiags, plugin.HclDiagnosticsToRPCDiagnostics(genDiags)...),
			}, nil
		}
		return nil, fmt.Errorf("generating the TypeScript project: %w", err)
	}
	return &pulumirpc.GenerateProjectResponse{Diagnostics: rpcDiags}, nil
}
