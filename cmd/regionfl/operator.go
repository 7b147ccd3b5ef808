package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"regionfl/client"
	"regionfl/he"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

func newOperatorCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Manage the coordinator cluster and the region"}
	raft := &cobra.Command{Use: "raft", Short: "Inspect and change the replica set"}
	raft.AddCommand(newRaftListCmd(), newRaftRemoveCmd(), newRaftTransferCmd(), newRaftSnapshotCmd())
	cmd.AddCommand(raft, newRegionCreateCmd(), newRekeyCmd(), newRevokeCmd(), newListRevokedCmd(), newPublishRevocationsCmd(), newIdentityInitCmd("operator"), newIdentityRenewCmd("operator"))
	return cmd
}

func newRaftListCmd() *cobra.Command {
	return newListCmd(listing[*pb.Replica]{
		use:   "list-replicas",
		short: "List the coordinator replicas and which one leads",
		fetch: func(ctx context.Context, conn client.Conn) ([]*pb.Replica, error) {
			resp, err := conn.Operator.ListReplicas(ctx, &pb.ListReplicasRequest{})
			return resp.GetReplicas(), err
		},
		json: func(r *pb.Replica) map[string]any {
			return map[string]any{"id": r.Id, "raft_addr": r.RaftAddr, "grpc_addr": r.GrpcAddr, "leader": r.Leader, "suffrage": r.Suffrage}
		},
		header: "ID\tRAFT ADDRESS\tGRPC ADDRESS\tSUFFRAGE\tLEADER",
		row: func(r *pb.Replica) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%v", r.Id, r.RaftAddr, r.GrpcAddr, r.Suffrage, r.Leader)
		},
	})
}

func newRaftRemoveCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "remove-replica ID",
		Short: "Remove a replica from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.RemoveReplicaResponse, error) {
				return conn.Operator.RemoveReplica(ctx, &pb.RemoveReplicaRequest{Id: args[0]})
			})
			return err
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

func newRekeyCmd() *cobra.Command {
	var (
		cf     clientFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:   "rekey",
		Short: "Start a new key epoch now: every hospital runs a fresh key ceremony, rounds switch to the new key at their next model version, and the old Shamir shares are erased",
		Long: `Start a new key epoch now. The region re-keys on its own when its key has
spent half of its decryption budget; run this after a hospital's host was
reinstalled or its key material may have leaked. Rounds keep the old key
until the new epoch's members hold the new one, so training does not stop.
A hospital that has not enrolled within the replicas' --enrollment-wait
sits the epoch out (at least threshold+1 hospitals must enroll) and joins
the next one; a ceremony that stalls after that is abandoned for a fresh
epoch after twice the wait.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageError{errors.New("--reason is required: it goes into the audit log")}
			}
			resp, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.StartKeyEpochResponse, error) {
				return conn.Operator.StartKeyEpoch(ctx, &pb.StartKeyEpochRequest{Reason: reason})
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key epoch %d started: hospitals run its ceremony as they poll; rounds switch to it at their next model version\n", resp.Epoch)
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&reason, "reason", "", "why the region re-keys (recorded in the audit log)")
	return cmd
}

func newRaftTransferCmd() *cobra.Command {
	var (
		cf clientFlags
		to string
	)
	cmd := &cobra.Command{
		Use:   "transfer-leadership",
		Short: "Hand leadership to another replica (before maintenance on the leader's host); rounds go on under the new leader",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.TransferLeadershipResponse, error) {
				return conn.Operator.TransferLeadership(ctx, &pb.TransferLeadershipRequest{To: to})
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "leadership moved from %s to %s\n", resp.From, resp.Leader)
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&to, "to", "", "the replica ID to hand leadership to (default: the most up-to-date follower)")
	return cmd
}

func newRaftSnapshotCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Have the leader snapshot its state now and compact its log (before maintenance on its host)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.TakeSnapshotResponse, error) {
				return conn.Operator.TakeSnapshot(ctx, &pb.TakeSnapshotRequest{})
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s snapshotted its state at log index %d\n", resp.Replica, resp.Index)
			return nil
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
		committee uint32
		maxAge    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create-region",
		Short: "Fix the region's hospitals and decryption threshold; starts the key ceremony",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(hospitals) == 0 || threshold == 0 {
				return usageError{errors.New("--hospitals and --threshold are required")}
			}
			if err := identity.CheckRevocationMaxAge(maxAge); err != nil {
				return usageError{fmt.Errorf("--revocation-max-age: %w", err)}
			}
			cert, _, err := cf.load()
			if err != nil {
				return err
			}
			// The operator signs the region (and draws its ceremony seed):
			// nodes accept no region an operator did not sign.
			// The smallest parameter set whose sums hold every hospital's
			// update: larger sets spend more bytes per value.
			params, err := he.ParamsFor(len(hospitals))
			if err != nil {
				return usageError{fmt.Errorf("--hospitals: %w", err)}
			}
			req, err := client.CreateRegionRequest(cert, params.Name(), hospitals, threshold, committee, maxAge)
			if err != nil {
				return err
			}
			if _, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.CreateRegionResponse, error) {
				return conn.Operator.CreateRegion(ctx, req)
			}); err != nil {
				return err
			}
			d := identity.RegionDigest(req.Params, req.Hospitals, req.Threshold, req.Committee, req.Seed, req.RevocationMaxAgeS)
			holders := "every hospital holds key shares"
			if c := identity.CommitteeSize(req.Committee, len(req.Hospitals)); c < len(req.Hospitals) {
				holders = fmt.Sprintf("a committee of %d drawn per key epoch holds the key shares", c)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "region created: %d hospitals (%s), threshold %d, %s, parameters %s, digest %x\n",
				len(req.Hospitals), strings.Join(req.Hospitals, ","), req.Threshold, holders, req.Params, d[:8])
			// Hospitals of a region with a maximum age act only on a fresh
			// signed list: the first one goes out with the region.
			n, err := publishRevocations(cmd.Context(), &cf)
			if err != nil {
				return fmt.Errorf("the region exists, but its first revocation list was not published (run regionfl operator publish-revocations): %w", err)
			}
			reportPublished(cmd, n, maxAge)
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringSliceVar(&hospitals, "hospitals", nil, "hospital IDs, comma-separated")
	cmd.Flags().Uint32Var(&threshold, "threshold", 0, "how many hospitals must cooperate to decrypt (t of N)")
	cmd.Flags().Uint32Var(&committee, "committee", 0, "how many hospitals, drawn anew for each key epoch, hold the key shares and decrypt (threshold to N; 0: every hospital)")
	cmd.Flags().DurationVar(&maxAge, "revocation-max-age", defaultRevocationMaxAge,
		"hospitals act only while the newest operator-signed revocation list is younger than this (0: no limit; publish one more often, e.g. hourly with regionfl operator publish-revocations)")
	return cmd
}

// defaultRevocationMaxAge bounds, by default, how long a coordinator can
// withhold a revocation from the hospitals: a day, with lists published
// hourly.
const defaultRevocationMaxAge = 24 * time.Hour

// newPublishRevocationsCmd is `regionfl operator publish-revocations`: run
// it on a schedule well within the region's revocation maximum age.
func newPublishRevocationsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "publish-revocations",
		Short: "Sign and publish the region's revocation list as it is now (run it on a schedule: hospitals stop working once the newest list is older than the region's maximum age)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := publishRevocations(cmd.Context(), &cf)
			if err != nil {
				return err
			}
			reportPublished(cmd, n, 0)
			return nil
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

// publishRevocations signs and publishes the region's revocation list
// with the operator's key (client.PublishRevocationList).
func publishRevocations(ctx context.Context, cf *clientFlags) (int, error) {
	cert, pool, err := cf.load()
	if err != nil {
		return 0, err
	}
	c, err := cf.dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return client.PublishRevocationList(ctx, c, cert, pool, time.Now)
}

func reportPublished(cmd *cobra.Command, serials int, maxAge time.Duration) {
	fmt.Fprintf(cmd.OutOrStdout(), "revocation list published: %d revoked serials, signed at %s\n", serials, time.Now().UTC().Format(time.RFC3339))
	if maxAge > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "hospitals act only while the newest list is younger than %v: run regionfl operator publish-revocations on a schedule (e.g. hourly)\n", maxAge)
	}
}
