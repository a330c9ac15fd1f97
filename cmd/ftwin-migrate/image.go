package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/ociimage"
)

func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "build container images without a registry or Docker",
		Subcommands: []*cli.Command{
			{
				Name: "build",
				Usage: "write an OCI image archive of a root filesystem directory (--rootfs), or of programs with " +
					"their shared libraries (--executable), for `lab run --image-archive` or `ctr images import`",
				ArgsUsage: "[-- CMD...]",
				Description: "CMD becomes the image's Cmd (the default arguments after its entrypoint).\n" +
					"   ftwin-migrate image build --executable kcat --name ftwin.local/kcat:1 -o kcat.tar\n" +
					"   ftwin-migrate image build --rootfs ./jre-app --entrypoint /opt/jre/bin/java -e JAVA_TOOL_OPTIONS=-Xss512k --name ftwin.local/streams:1 -o streams.tar -- -jar /app/app.jar",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "the archive to write"},
					&cli.StringFlag{Name: "name", Required: true, Usage: "the image's name, e.g. ftwin.local/kcat:1"},
					&cli.StringFlag{Name: "rootfs", Usage: "directory holding the image's root filesystem"},
					&cli.StringSliceFlag{Name: "executable", Usage: "program (path or name on PATH) copied in at its path with the shared libraries ldd lists (repeatable; the first is the default entrypoint)"},
					&cli.StringFlag{Name: "entrypoint", Usage: "the image's entrypoint (default: the first --executable)"},
					&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "KEY=VALUE in the image's environment (repeatable)"},
					&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "the image's working directory (default /)"},
				},
				Action: imageBuild,
			},
		},
	}
}

func imageBuild(c *cli.Context) error {
	rootfs, exes := c.String("rootfs"), c.StringSlice("executable")
	if (rootfs == "") == (len(exes) == 0) {
		return fmt.Errorf("image build takes --rootfs DIR or --executable PROGRAM (not both)")
	}
	for _, kv := range c.StringSlice("env") {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--env %q: want KEY=VALUE", kv)
		}
	}
	if w := c.String("workdir"); w != "" && !filepath.IsAbs(w) {
		return fmt.Errorf("--workdir %q: want an absolute path", w)
	}
	opts := []ociimage.Opt{ociimage.WithEnv(c.StringSlice("env")...), ociimage.WithWorkingDir(c.String("workdir")), ociimage.WithCmd(c.Args().Slice()...)}
	entrypoint := c.String("entrypoint")
	if len(exes) > 0 {
		tmp, err := os.MkdirTemp("", "ftwin-rootfs-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		for _, d := range []string{"tmp", "etc", "dev", "proc", "sys"} {
			if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
				return err
			}
		}
		if err := os.Chmod(filepath.Join(tmp, "tmp"), 0o1777); err != nil {
			return err
		}
		for i, exe := range exes {
			inImage, err := ociimage.AddExecutable(c.Context, tmp, exe)
			if err != nil {
				return err
			}
			if i == 0 && entrypoint == "" {
				entrypoint = inImage
			}
		}
		rootfs = tmp
	}
	if entrypoint != "" {
		opts = append(opts, ociimage.WithEntrypoint(entrypoint))
	}
	out := c.String("output")
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("image build: %w", err)
	}
	if err := ociimage.WriteArchive(c.Context, f, c.String("name"), rootfs, opts...); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image build: write %s: %w", out, err)
	}
	fmt.Printf("image %s written to %s\n", c.String("name"), out)
	return nil
}
