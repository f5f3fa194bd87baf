// Command sds-sdkgen writes the Python and Go SDKs of a Pulumi package from its schema.json, offline.
//
//	sds-sdkgen --schema schema.json --language python|go --out sdk
//
// `pulumi package gen-sdk --language python|go` asks the language host of that language to generate the code, and
// the Go module proxy reachable here serves neither pulumi-language-python nor pulumi-language-go (403 at every
// version; see ../../README.md). The generators those hosts call live in pkg/v3 (codegen/python, codegen/go), which
// this module already pins for the CLI, so this tool calls them directly, as the hosts do, and then finishes what a
// host or a provider's Makefile would:
//
//   - python: <out>/python, a pyproject-based package (language.python.pyproject.enabled in the schema) whose
//     version is the schema's (respectSchemaVersion); README.md is copied next to pyproject.toml, which names it.
//   - go: <out>/go, one Go module whose path is the parent of language.go.importBasePath (the package itself is in
//     <out>/go/<name>), with a go.mod requiring github.com/pulumi/pulumi/sdk/v3 at this module's pinned version.
//     go.sum is left to `go mod tidy` (scripts/gen-sdk.sh runs it), which needs the module graph.
//
// The output folder <out>/<language> is replaced as a whole, as gen-sdk does, so files the schema no longer makes go.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"sort"

	"github.com/blang/semver"
	"golang.org/x/mod/modfile"

	gogen "github.com/pulumi/pulumi/pkg/v3/codegen/go"
	pygen "github.com/pulumi/pulumi/pkg/v3/codegen/python"
	"github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)

const tool = "sds-sdkgen"

func main() {
	schemaPath := flag.String("schema", "schema.json", "the package schema")
	language := flag.String("language", "", "python or go")
	out := flag.String("out", "sdk", "the SDK root; the SDK is written to <out>/<language>")
	flag.Parse()
	if err := run(*schemaPath, *language, *out); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tool, err)
		os.Exit(1)
	}
}

func run(schemaPath, language, out string) error {
	if language != "python" && language != "go" {
		return fmt.Errorf("--language must be python or go, not %q", language)
	}
	pkg, err := bind(schemaPath)
	if err != nil {
		return err
	}
	var files map[string][]byte
	switch language {
	case "python":
		files, err = pygen.GeneratePackage(tool, pkg, nil, noLoader{})
		if err == nil {
			err = addPythonReadme(files)
		}
	case "go":
		files, err = generateGo(pkg)
	}
	if err != nil {
		return fmt.Errorf("generating the %s SDK: %w", language, err)
	}
	return write(filepath.Join(out, language), files)
}

// bind reads and binds the schema; binding errors are reported one a line, each naming its place in the schema.
func bind(schemaPath string) (*schema.Package, error) {
	raw, err := os.ReadFile(schemaPath)
	if err != nil {
		return nil, err
	}
	var spec schema.PackageSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("%s: %w", schemaPath, err)
	}
	pkg, diags, err := schema.BindSpec(spec, noLoader{}, schema.ValidationOptions{AllowDanglingReferences: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", schemaPath, err)
	}
	if diags.HasErrors() {
		msgs := ""
		for _, d := range diags.Errs() {
			msgs += fmt.Sprintf("\n  %s: %v", schemaPath, d)
		}
		return nil, fmt.Errorf("the schema does not bind:%s", msgs)
	}
	return pkg, nil
}

// noLoader refuses every package reference: the sds schema references no other package, and a new reference
// should fail loudly here rather than reach for a plugin download.
type noLoader struct{}

func (noLoader) LoadPackage(pkg string, _ *semver.Version) (*schema.Package, error) {
	return nil, fmt.Errorf("the schema references package %q; %s resolves no other packages", pkg, tool)
}

func (noLoader) LoadPackageV2(_ context.Context, d *schema.PackageDescriptor) (*schema.Package, error) {
	return nil, fmt.Errorf("the schema references package %q; %s resolves no other packages", d.Name, tool)
}

func (noLoader) LoadPackageReference(pkg string, _ *semver.Version) (schema.PackageReference, error) {
	return nil, fmt.Errorf("the schema references package %q; %s resolves no other packages", pkg, tool)
}

func (noLoader) LoadPackageReferenceV2(_ context.Context, d *schema.PackageDescriptor) (schema.PackageReference, error) {
	return nil, fmt.Errorf("the schema references package %q; %s resolves no other packages", d.Name, tool)
}

// addPythonReadme puts the package README (which the generator writes inside the package) next to pyproject.toml,
// where the generated `readme = "README.md"` looks for it: without it no wheel builds.
func addPythonReadme(files map[string][]byte) error {
	for name, data := range files {
		if filepath.Base(name) == "README.md" && filepath.Dir(filepath.Dir(name)) == "." {
			files["README.md"] = data
			return nil
		}
	}
	return errors.New("the Python generator wrote no <package>/README.md")
}

// generateGo runs the Go generator and adds the module's go.mod. Without `meta.supportPack` (which would change the
// Node.js SDK too) the generator writes no go.mod, and with it, it would pin an older sdk/v3 than the one we build.
func generateGo(pkg *schema.Package) (map[string][]byte, error) {
	files, err := gogen.GeneratePackage(tool, pkg, nil)
	if err != nil {
		return nil, err
	}
	info, _ := pkg.Language["go"].(gogen.GoPackageInfo)
	if info.ImportBasePath == "" {
		return nil, errors.New("schema.json: language.go.importBasePath is not set (e.g. github.com/<org>/pulumi-<name>/sdk/go/<name>)")
	}
	if path.Base(info.ImportBasePath) != pkg.Name {
		return nil, fmt.Errorf("schema.json: language.go.importBasePath %q must end in /%s, the folder the generator writes",
			info.ImportBasePath, pkg.Name)
	}
	sdkVersion, err := pinnedSDKVersion()
	if err != nil {
		return nil, err
	}
	var mod modfile.File
	for _, step := range []error{
		mod.AddModuleStmt(path.Dir(info.ImportBasePath)),
		mod.AddGoStmt("1.25"),
		mod.AddRequire("github.com/pulumi/pulumi/sdk/v3", sdkVersion),
	} {
		if step != nil {
			return nil, step
		}
	}
	if files["go.mod"], err = mod.Format(); err != nil {
		return nil, err
	}
	return files, nil
}

// pinnedSDKVersion is the version of github.com/pulumi/pulumi/sdk/v3 this tool was built with, which is the one
// tools/pulumi-cli/go.mod pins for the CLI: the SDK's programs then run against the engine they were tested with.
func pinnedSDKVersion() (string, error) {
	bi, ok := debug.ReadBuildInfo()
	if ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/pulumi/pulumi/sdk/v3" {
				if m.Replace != nil {
					m = m.Replace
				}
				return m.Version, nil
			}
		}
	}
	return "", errors.New("this binary carries no build information for github.com/pulumi/pulumi/sdk/v3")
}

// write replaces dir with the generated files (in name order, so a failure is reproducible).
func write(dir string, files map[string][]byte) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

var _ schema.ReferenceLoader = noLoader{}
