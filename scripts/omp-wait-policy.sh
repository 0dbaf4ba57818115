# Sourced by start.sh and worker.sh. torch's OpenMP threads sleep as soon as they wait instead of
# spinning: with a job (local, or a worker on this host) or Label Studio busy on the same cores, spinning
# threads made an opened task 7-14x slower and a two-thread job on a shared host 3x costlier (the web
# server's PASSIVE keeps an opened task within 2x; bench/RESULTS.md). Set OMP_WAIT_POLICY empty for
# libgomp's own default (spin, then sleep: up to ~20 % faster for a video on a host that does nothing else).
if [ -z "${OMP_WAIT_POLICY+set}" ]; then
  export OMP_WAIT_POLICY=PASSIVE
elif [ -z "$OMP_WAIT_POLICY" ]; then
  unset OMP_WAIT_POLICY
fi
