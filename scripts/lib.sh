# The prelude the benchmark scripts share; sourced by them, not run.

# Re-executes the calling script in a session of its own and lowers that session's autogroup nice
# (AUTOGROUP_NICE, default -15): the kernel shares CPU per session, so `nice` alone does not keep
# other work off a timed run (../shared/peers/pytorch/run_all.sh does the same). Call it with the
# script's arguments before anything else.
run_in_own_session() {
    if [ "${_IN_OWN_SESSION:-}" != 1 ]; then
        exec env _IN_OWN_SESSION=1 setsid --wait bash "$0" "$@"
    fi
    echo "${AUTOGROUP_NICE:--15}" > /proc/self/autogroup 2>/dev/null || echo "warning: could not renice autogroup"
}

# Sets PY to a Python with torch unless given (the reference's .venv under $PEER, then
# ~/.cache/rnnlm/peer-venv) and checks that it and $RNNLM exist, or says how to get them.
require_python_and_rnnlm() {
    if [ -z "${PY:-}" ]; then
        for candidate in "$PEER/.venv/bin/python" "$HOME/.cache/rnnlm/peer-venv/bin/python"; do
            [ -x "$candidate" ] && PY=$candidate && break
        done
    fi
    [ -x "${PY:-}" ] || { echo "no Python with torch: set PY (see $PEER/README.md)"; exit 1; }
    [ -x "$RNNLM" ] || { echo "build first: cargo build --release -p rnnlm-cli"; exit 1; }
}
