// Command tcprepl is the single binary behind every tcprepl role: the
// operator, the master, the reference worker, the probe CLI and the
// benchmark driver.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/version"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "tcprepl",
		Short:         "Run and observe a Synapse-protocol replication topology",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand())
	root.AddCommand(newMasterCommand())
	root.AddCommand(newBenchCommand())
	root.AddCommand(newOperatorCommand())
	root.AddCommand(newProbeCommand())
	root.AddCommand(newWorkerCommand())
	root.AddCommand(newSynapseEmulateCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "tcprepl %s (commit %s)\n", version.Version, version.Commit)
			return err
		},
	}
}

func main() {
	if err := rootCommandFor(os.Args[0]).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tcprepl:", err)
		os.Exit(1)
	}
}
