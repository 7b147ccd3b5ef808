package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"regionfl/client"
)

// listing is a read-only list command: how to fetch its rows from the
// region, and how to show one row as a JSON object and as a table line.
type listing[T any] struct {
	use, short string
	fetch      func(context.Context, client.Conn) ([]T, error)
	json       func(T) map[string]any
	header     string         // tab-separated column names
	row        func(T) string // tab-separated cells
}

// newListCmd builds the command: a table for people, --json for scripts.
func newListCmd[T any](l listing[T]) *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   l.use,
		Short: l.short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rows, err := request(cmd.Context(), &cf, l.fetch)
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, len(rows))
				for i, r := range rows {
					out[i] = l.json(r)
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, l.header)
			for _, r := range rows {
				fmt.Fprintln(tw, l.row(r))
			}
			return tw.Flush()
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
