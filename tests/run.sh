#!/usr/bin/env bash
# The README's test command: installs dependencies, builds with CMake (ccache), runs ctest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${STRONGROOM_BUILD_DIR:-$root/build}
jobs=$(nproc)

"$root/deploy/install-deps.sh"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j "$jobs"

# The reflection test drives our daemons with an independent npm client.
"$root/tests/reflection/install.sh"

cd "$build"
# ctest prints its summary line ("N% tests passed, M tests failed out of K").
ctest --output-on-failure -j "$jobs" "$@"
