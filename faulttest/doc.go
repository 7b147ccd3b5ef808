// Package faulttest runs regionfl as real processes and containers and
// injects faults: kill -9 of coordinator replicas and hospital nodes, docker
// kill of a replica's container, docker network disconnect of a node. The
// tests drive the binary only through its CLI, as the README's "Run a real
// region" walkthrough does (`ca init/sign`, `coordinator init/run`, `node
// init/run`, `operator create-region`, `operator raft list-replicas --json`,
// `job submit`, `job status --json`), and build it once per test binary with
// CGO_ENABLED=0 and -tags faultinject (the fault hooks of
// cmd/regionfl/faultinject.go, nothing else; the Docker test copies that
// same static file into the FROM scratch image of the repository's
// Dockerfile).
//
// Tests (Linux only; all skipped under -short):
//
//   - TestProcessLeaderCrash (~10 s): CA, 3 replicas and 3 nodes on
//     127.0.0.1; a job of 4 rounds, K=2, 10 s round deadline. As round 2
//     opens, hospital-3 is paused (SIGSTOP); once the leader has accepted the
//     two other updates it is killed -9 and hospital-3 resumed, so the new
//     leader must have those updates sent again (by digest) and count each
//     once. The job must finish with every round committed and each round's
//     decrypted sample count equal to its contributors' training rows (an
//     update counted twice would inflate it). The killed replica restarts
//     on its data directory and must rejoin as a voter; then the other
//     follower is killed and a second job must finish, which needs the
//     restarted replica's acknowledgement of every entry.
//   - TestProcessHospitalCrash (~10 s): kill -9 a node right after it
//     encrypted its round-2 update, let a round commit without it, restart
//     it; same checks, and it must contribute to the last round.
//   - TestReadmeWalkthroughScript (~6 s): runs scripts/region-local.sh.
//   - TestDockerRegion (~80 s): the same region in containers on a private
//     network, a job of 30 rounds with a 20 s deadline; docker kill -s KILL
//     of the leader while round 2 is under way, docker network
//     disconnect of a node until a round commits without it, reconnect;
//     the job must finish, the node must send updates again, and the killed
//     container, started again, must rejoin as a voter.
//   - TestFault* (only with REGIONFL_FAULT_SUITE=1, which
//     scripts/fault-suite.sh sets; about a minute each): one region of
//     containers per scenario: minority partition, leader paused, every
//     replica killed, poison job, leadership transferred under load,
//     flapping links, a hospital cut off during its upload, a corrupt
//     snapshot on restart, a full disk on the leader (a tmpfs the test
//     mounts: root only), a history of clients' submits and lists under
//     flapping links checked for linearizability (porcupine), and clock
//     skew between replicas (REGIONFL_CLOCK_OFFSET, a hook of the
//     faultinject build the tests use). Each records a line of the suite's
//     table.
//
// Environment:
//
//	REGIONFL_DOCKER_TESTS=0|1         0 skips the Docker test; 1 makes a missing Docker engine a failure.
//	                                  Unset, it runs when `docker info` answers and skips otherwise.
//	REGIONFL_DOCKER_ROUND_DEADLINE=D  the Docker job's round deadline (default 5s).
//	REGIONFL_FAULTTEST_LOGS=DIR       a failed test leaves every process's and container's full log here.
//
// Every wait polls a condition with a generous timeout; fault injection is
// triggered by the processes' own log lines (e.g. `msg="update sent" ...
// round=2`), never by sleeping. Processes die with the test binary
// (Pdeathsig), and the Docker test removes its containers, network and image
// at the end, pass or fail (everything is labelled regionfl.faulttest). Only
// a test binary killed from outside leaves containers behind; remove them
// with
//
//	docker rm -f $(docker ps -aq --filter label=regionfl.faulttest)
//	docker network prune --filter label=regionfl.faulttest
//	docker image prune -a --filter label=regionfl.faulttest
package faulttest
