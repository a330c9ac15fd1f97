package broker

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// kafkaTools is the table of Apache Kafka's command-line tools; hack/install.sh writes a
// bin/SCRIPT.sh per line from the same file.
//
//go:embed kafkatools.txt
var kafkaTools string

// Tool is one of Apache Kafka's command-line tools (the main class behind one of its
// bin/*.sh scripts).
type Tool struct {
	// Script is the script's name without ".sh", for example "kafka-consumer-groups".
	Script string
	// Class is the main class, for example org.apache.kafka.tools.consumer.group.ConsumerGroupCommand.
	Class string
	// BootstrapFlag is the flag that names the brokers ("--bootstrap-server"); empty if the
	// tool talks to no broker (it works on files).
	BootstrapFlag string
	// FlagLast: the flag goes after the other arguments (it belongs to a subcommand, as in
	// kafka-cluster's), not before them.
	FlagLast bool
}

// Tools returns Apache Kafka's command-line tools that the installer provides, in the order
// of broker/kafkatools.txt.
func Tools() []Tool {
	var ts []Tool
	for _, line := range strings.Split(kafkaTools, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		t := Tool{Script: f[0], Class: f[1]}
		if len(f) > 2 && f[2] != "-" {
			t.BootstrapFlag = f[2]
		}
		t.FlagLast = len(f) > 3 && f[3] == "last"
		ts = append(ts, t)
	}
	return ts
}

// LookupTool finds a tool by its script's name, with or without the "kafka-" prefix and the
// ".sh" suffix: "consumer-groups", "kafka-consumer-groups" and "kafka-consumer-groups.sh" are
// the same tool.
func LookupTool(name string) (Tool, error) {
	n := strings.TrimPrefix(strings.TrimSuffix(name, ".sh"), "kafka-")
	var names []string
	for _, t := range Tools() {
		if strings.TrimPrefix(t.Script, "kafka-") == n {
			return t, nil
		}
		names = append(names, strings.TrimPrefix(t.Script, "kafka-"))
	}
	return Tool{}, fmt.Errorf("broker: no Kafka tool %q; the tools are: %s", name, strings.Join(names, ", "))
}

// Args returns args with the bootstrap flag and bootstrap added, unless the tool takes none,
// bootstrap is empty or args already name a bootstrap (--bootstrap-server or
// --bootstrap-controller, as "--flag value" or "--flag=value"). Help requests (-h, --help)
// are passed as they are, so that the tool prints its usage and no complaint about the flag.
func (t Tool) Args(bootstrap string, args []string) []string {
	if t.BootstrapFlag == "" || bootstrap == "" {
		return args
	}
	for _, a := range args {
		if a == "-h" || a == "--help" {
			return args
		}
		for _, f := range []string{"--bootstrap-server", "--bootstrap-controller", t.BootstrapFlag} {
			if a == f || strings.HasPrefix(a, f+"=") {
				return args
			}
		}
	}
	if t.FlagLast {
		return append(slices.Clone(args), t.BootstrapFlag, bootstrap)
	}
	return append([]string{t.BootstrapFlag, bootstrap}, args...)
}

// ToolCommand returns the command that runs tool with args from the Kafka installation in home
// (empty: $FTWIN_KAFKA_HOME, else DefaultKafkaHome) against the brokers at bootstrap (see
// Tool.Args; empty: as args say). It runs the tool's main class on java, as the installer's
// bin/SCRIPT.sh does: a heap of 256 MiB unless $KAFKA_HEAP_OPTS says otherwise, warnings and
// errors logged to stderr. The caller connects its standard streams and runs it.
func ToolCommand(ctx context.Context, home string, tool Tool, bootstrap string, args []string) (*exec.Cmd, error) {
	home = KafkaHome(home)
	jars, _ := filepath.Glob(filepath.Join(home, "libs", "kafka-tools-[0-9]*.jar"))
	if len(jars) == 0 {
		return nil, fmt.Errorf("broker: Kafka's command-line tools (kafka-tools-*.jar) are not in %s/libs: run `make install` (it assembles Apache Kafka %s with its tools)", home, KafkaVersion)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("broker: java not found (run `make install`): %w", err)
	}
	jvm := strings.Fields(os.Getenv("KAFKA_HEAP_OPTS"))
	if len(jvm) == 0 {
		jvm = []string{"-Xmx256m"}
	}
	jvm = append(jvm, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
	if cfg := filepath.Join(home, "config", "tools-log4j2.properties"); fileExists(cfg) {
		jvm = append(jvm, "-Dlog4j2.configurationFile="+cfg)
	}
	jvm = append(jvm, "-cp", filepath.Join(home, "libs")+"/*", tool.Class)
	return exec.CommandContext(ctx, java, append(jvm, tool.Args(bootstrap, args)...)...), nil
}

// KafkaHome resolves the Kafka installation: home if not empty, else $FTWIN_KAFKA_HOME, else
// DefaultKafkaHome.
func KafkaHome(home string) string {
	if home == "" {
		home = os.Getenv("FTWIN_KAFKA_HOME")
	}
	if home == "" {
		home = DefaultKafkaHome
	}
	return home
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
