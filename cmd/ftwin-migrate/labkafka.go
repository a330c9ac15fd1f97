package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
)

func labKafkaCommand() *cli.Command {
	return &cli.Command{
		Name:  "kafka",
		Usage: "run one of Apache Kafka's command-line tools (consumer-groups, topics, console-consumer, ...) against the lab's broker",
		Description: "TOOL is a script of Kafka's bin/ with or without its kafka- prefix and .sh suffix\n" +
			"(consumer-groups, kafka-topics, kafka-console-consumer.sh); with no TOOL the tools are listed.\n" +
			"The tool's main class runs on java from the Kafka installation (--kafka-home, default\n" +
			"$FTWIN_KAFKA_HOME or " + broker.DefaultKafkaHome + ", whose bin/ holds the same tools as scripts),\n" +
			"with --bootstrap-server set to the lab's broker unless ARGS name one. It works against the\n" +
			"Apache broker and the embedded kfake broker alike, as far as kfake serves the tool's requests.\n" +
			"Flags of this command go before TOOL; everything after TOOL is the tool's.",
		ArgsUsage: "[TOOL [ARGS...]]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "kafka-home", Usage: "Apache Kafka installation with libs/ (default: $FTWIN_KAFKA_HOME or " + broker.DefaultKafkaHome + ")"},
		}, labFlags...),
		Action: labKafka,
	}
}

func labKafka(c *cli.Context) error {
	if c.NArg() == 0 {
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "TOOL\tMAIN CLASS")
		for _, t := range broker.Tools() {
			fmt.Fprintf(w, "%s\t%s\n", t.Script, t.Class)
		}
		return w.Flush()
	}
	tool, err := broker.LookupTool(c.Args().First())
	if err != nil {
		return err
	}
	var bootstrap string
	if tool.BootstrapFlag != "" {
		l, err := lab.Load(c.String("base-dir"), c.String("name"))
		if err != nil {
			return err
		}
		if l.BrokerAddr == "" {
			return fmt.Errorf("lab %s has no broker (it was brought up with --broker none): give the tool %s yourself", l.Name, tool.BootstrapFlag)
		}
		bootstrap = l.BrokerAddr
	}
	args := c.Args().Tail()
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	cmd, err := broker.ToolCommand(c.Context, c.String("kafka-home"), tool, bootstrap, args)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() > 0 {
			return cli.Exit("", ee.ExitCode()) // the tool said why on stderr
		}
		return fmt.Errorf("run %s: %w", tool.Script, err)
	}
	return nil
}

func labBrokerLog(c *cli.Context) error {
	l, err := lab.Load(c.String("base-dir"), c.String("name"))
	if err != nil {
		return err
	}
	path := l.BrokerLogPath()
	if path == "" {
		return fmt.Errorf("lab %s has no broker (it was brought up with --broker none)", l.Name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("no log of the lab's %s broker: %w", l.BrokerKind, err)
	}
	_, err = os.Stdout.Write(tailLines(data, c.Int("tail")))
	return err
}
