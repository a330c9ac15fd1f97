package broker

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestKafkaVersionIsThePoms: the version the Go code expects is the one the installer assembles.
func TestKafkaVersionIsThePoms(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "hack", "kafka", "pom.xml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<kafka\.version>([^<]+)</kafka\.version>`).FindSubmatch(b)
	if m == nil || string(m[1]) != KafkaVersion {
		t.Fatalf("hack/kafka/pom.xml has kafka.version %q; broker.KafkaVersion is %q", m, KafkaVersion)
	}
	if !strings.HasSuffix(DefaultKafkaHome, "kafka-"+KafkaVersion) {
		t.Errorf("DefaultKafkaHome %s does not name version %s", DefaultKafkaHome, KafkaVersion)
	}
}

func TestTools(t *testing.T) {
	ts := Tools()
	if len(ts) < 20 {
		t.Fatalf("%d tools; kafkatools.txt lists more", len(ts))
	}
	seen := map[string]bool{}
	for _, tool := range ts {
		if seen[tool.Script] || !strings.HasPrefix(tool.Script, "kafka-") || !strings.Contains(tool.Class, ".") {
			t.Errorf("bad or repeated line: %+v", tool)
		}
		seen[tool.Script] = true
	}
	for _, name := range []string{"consumer-groups", "kafka-consumer-groups", "kafka-consumer-groups.sh"} {
		tool, err := LookupTool(name)
		if err != nil || tool.Class != "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand" {
			t.Errorf("LookupTool(%q) = %+v, %v", name, tool, err)
		}
	}
	if _, err := LookupTool("kafka-nonesuch"); err == nil || !strings.Contains(err.Error(), "consumer-groups") {
		t.Errorf("an unknown tool: %v; want an error listing the tools", err)
	}
	if st, _ := LookupTool("storage"); st.BootstrapFlag != "" {
		t.Errorf("kafka-storage takes no bootstrap: %+v", st)
	}
}

func TestToolArgs(t *testing.T) {
	groups, _ := LookupTool("consumer-groups")
	cluster, _ := LookupTool("cluster")
	dump, _ := LookupTool("dump-log")
	const addr = "10.0.0.1:9092"
	cases := []struct {
		name string
		tool Tool
		args []string
		want []string
	}{
		{"added first", groups, []string{"--list"}, []string{"--bootstrap-server", addr, "--list"}},
		{"no arguments still get it", groups, nil, []string{"--bootstrap-server", addr}},
		{"given, kept", groups, []string{"--bootstrap-server", "x:1", "--list"}, []string{"--bootstrap-server", "x:1", "--list"}},
		{"given with =", groups, []string{"--bootstrap-server=x:1", "--list"}, []string{"--bootstrap-server=x:1", "--list"}},
		{"a controller given", groups, []string{"--bootstrap-controller", "x:1"}, []string{"--bootstrap-controller", "x:1"}},
		{"help as it is", groups, []string{"--help"}, []string{"--help"}},
		{"after a subcommand", cluster, []string{"cluster-id"}, []string{"cluster-id", "--bootstrap-server", addr}},
		{"a file tool takes none", dump, []string{"--files", "x.log"}, []string{"--files", "x.log"}},
	}
	for _, c := range cases {
		if got := c.tool.Args(addr, c.args); !slices.Equal(got, c.want) {
			t.Errorf("%s: Args(%q) = %q; want %q", c.name, c.args, got, c.want)
		}
	}
}

// TestJavaAPIKeys: Java clients are shown no DescribeTopicPartitions and CreateTopics at most v4;
// every other key as it is.
func TestJavaAPIKeys(t *testing.T) {
	key := func(k kmsg.Key, lo, hi int16) kmsg.ApiVersionsResponseApiKey {
		return kmsg.ApiVersionsResponseApiKey{ApiKey: int16(k), MinVersion: lo, MaxVersion: hi}
	}
	in := []kmsg.ApiVersionsResponseApiKey{key(kmsg.Produce, 3, 13), key(kmsg.CreateTopics, 2, 7), key(kmsg.DescribeTopicPartitions, 0, 0), key(kmsg.Metadata, 0, 13)}
	want := []kmsg.ApiVersionsResponseApiKey{key(kmsg.Produce, 3, 13), key(kmsg.CreateTopics, 2, 4), key(kmsg.Metadata, 0, 13)}
	same := func(a, b kmsg.ApiVersionsResponseApiKey) bool {
		return a.ApiKey == b.ApiKey && a.MinVersion == b.MinVersion && a.MaxVersion == b.MaxVersion
	}
	if got := JavaAPIKeys(in); !slices.EqualFunc(got, want, same) {
		t.Errorf("JavaAPIKeys = %+v; want %+v", got, want)
	}
	if in[1].MaxVersion != 7 {
		t.Error("JavaAPIKeys changed its input")
	}
}
