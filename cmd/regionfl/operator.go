package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"regionfl/client"
	pb "regionfl/proto/regionfl/v1"
)

func newOperatorCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Manage the coordinator cluster and the region"}
	raft := &cobra.Command{Use: "raft", Short: "Inspect and change the replica set"}
	raft.AddCommand(newRaftListCmd(), newRaftRemoveCmd())
	cmd.AddCommand(raft, newRegionCreateCmd(), newRevokeCmd(), newListRevokedCmd(), newIdentityInitCmd("operator"), newIdentityRenewCmd("operator"))
	return cmd
}

func newRaftListCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list-replicas",
		Short: "List the coordinator replicas and which one leads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			var rs []*pb.Replica
			err = call(cmd.Context(), c, func(ctx context.Context, conn client.Conn) error {
				resp, err := conn.Operator.ListReplicas(ctx, &pb.ListReplicasRequest{}, grpc.Trailer(conn.Trailer))
				rs = resp.GetReplicas()
				return err
			})
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, len(rs))
				for i, r := range rs {
					out[i] = map[string]any{"id": r.Id, "raft_addr": r.RaftAddr, "grpc_addr": r.GrpcAddr, "leader": r.Leader, "suffrage": r.Suffrage}
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRAFT ADDRESS\tGRPC ADDRESS\tSUFFRAGE\tLEADER")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", r.Id, r.RaftAddr, r.GrpcAddr, r.Suffrage, r.Leader)
			}
			return tw.Flush()
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newRaftRemoveCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "remove-replica ID",
		Short: "Remove a replica from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			return call(cmd.Context(), c, func(ctx context.Context, conn client.Conn) error {
				_, err := conn.Operator.RemoveReplica(ctx, &pb.RemoveReplicaRequest{Id: args[0]}, grpc.Trailer(conn.Trailer))
				return err
			})
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

func newRegionCreateCmd() *cobra.Command {
	var (
		cf        clientFlags
		hospitals []string
		threshold uint32
	)
	cmd := &cobra.Command{
		Use:   "create-region",
		Short: "Fix the region's hospitals and decryption threshold; starts the key ceremony",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(hospitals) == 0 || threshold == 0 {
				return usageError{errors.New("--hospitals and --threshold are required")}
			}
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			return call(cmd.Context(), c, func(ctx context.Context, conn client.Conn) error {
				_, err := conn.Operator.CreateRegion(ctx, &pb.CreateRegionRequest{Hospitals: hospitals, Threshold: threshold}, grpc.Trailer(conn.Trailer))
				return err
			})
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringSliceVar(&hospitals, "hospitals", nil, "hospital IDs, comma-separated")
	cmd.Flags().Uint32Var(&threshold, "threshold", 0, "how many hospitals must cooperate to decrypt (t of N)")
	return cmd
}
