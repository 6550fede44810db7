package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// suggestionDistance is the Levenshtein distance up to which an unknown
// command gets a "Did you mean this?" (cobra's SuggestionsMinimumDistance).
const suggestionDistance = 2

// usageError is a wrong command line: an unknown command or flag, a wrong
// number of arguments. Run exits with ExitUsage on it.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// strictCommands makes every command of root refuse what it does not know.
// Cobra shows the help and succeeds when a command that only groups others
// (tasks, dlq) gets an unknown subcommand: each such command here runs,
// showing its help when given no subcommand and failing with a suggestion
// on an unknown one. Argument and flag errors become usageErrors.
func strictCommands(root *cobra.Command) {
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{cmd: c, err: err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.SuggestionsMinimumDistance = suggestionDistance
		if c.HasSubCommands() && !c.Runnable() {
			// Flags are read here, so that `dlq redrve --all` names the
			// command rather than the flag.
			c.DisableFlagParsing = true
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				var flag string
				for _, a := range args {
					switch {
					case a == "-h" || a == "--help":
						return cmd.Help()
					case strings.HasPrefix(a, "-") && flag == "":
						flag = a
					case !strings.HasPrefix(a, "-"):
						return unknownCommand(cmd, a)
					}
				}
				if flag != "" {
					return &usageError{cmd: cmd, err: fmt.Errorf("unknown flag: %s", flag)}
				}
				return cmd.Help()
			}
		}
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return &usageError{cmd: cmd, err: err}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// unknownCommand is cobra's "unknown command" error with its suggestions.
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	return &usageError{cmd: cmd, err: fmt.Errorf("%s", msg)}
}
