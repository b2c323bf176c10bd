# Sourced by launch/local.sh and launch/slurm.sbatch (bash): the value of one gan_dist flag as absl will parse it
# from a command line, without Python, so that a launcher reads the --workdir its workers will use.
#
#   flag_value workdir "$@"     prints the value (nothing if the flag is absent); returns 2, with a message on
#                               stderr, where absl would refuse the flagfiles (one that cannot be read, a --flagfile
#                               with no file name)
#
# absl's rules, followed here: the last value wins; --flagfile=F (or --flagfile F, and -flagfile) is replaced, where
# it stands, by F's lines, so that flags after it override it and flags before it are overridden; in a flagfile, a
# line starting with # or // and a blank line are skipped, every other line is one argument (leading and trailing
# whitespace removed), and a line starting with --flagfile= includes that file (nested, at that place; a file
# already being read is skipped); file names are relative to the current directory (not to the including file),
# with ~ expanded; --name=V, -name=V, --name V and -name V all set a flag; nothing after `--` is a flag.

# The arguments with every flagfile expanded, in order, filled in by _flags_expand.
_flags_args=()

# _flags_tilde FILE: FILE with a leading ~ or ~/ expanded (os.path.expanduser).
_flags_tilde() {
  case "$1" in
    "~") printf '%s' "$HOME" ;;
    "~/"*) printf '%s' "$HOME/${1#"~/"}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# _flags_strip TEXT: TEXT without leading and trailing whitespace.
_flags_strip() {
  local text=$1
  text=${text#"${text%%[![:space:]]*}"}
  printf '%s' "${text%"${text##*[![:space:]]}"}"
}

# _flags_file FILE [FILES BEING READ...]: appends FILE's arguments to _flags_args.
_flags_file() {
  local file=$1 line name reading
  shift
  [[ -z "$file" ]] && return 0  # absl ignores an empty --flagfile=.
  for reading in "$@"; do
    [[ "$reading" == "$file" ]] && return 0  # A circular include: absl skips it (with a warning of its own).
  done
  if [[ -d "$file" || ! -r "$file" ]]; then
    echo "${FLAGS_SH_NAME:-launch}: cannot read the flagfile '$file' (--flagfile)" >&2
    return 2
  fi
  local lines=()
  mapfile -t lines < "$file" || return 2
  for line in "${lines[@]}"; do
    line=${line%$'\r'}
    if [[ -z "${line//[[:space:]]/}" || "$line" == "#"* || "$line" == "//"* ]]; then
      continue
    elif [[ "$line" == --flagfile=* || "$line" == -flagfile=* ]]; then
      name=$(_flags_strip "${line#*=}")
      _flags_file "$(_flags_tilde "$name")" "$file" "$@" || return 2
    else
      _flags_args+=("$(_flags_strip "$line")")
    fi
  done
}

# _flags_expand ARGS...: sets _flags_args to ARGS with every flagfile expanded where it stands.
_flags_expand() {
  _flags_args=()
  while (($# > 0)); do
    case "$1" in
      --flagfile=* | -flagfile=*)
        _flags_file "$(_flags_tilde "$(_flags_strip "${1#*=}")")" || return 2 ;;
      --flagfile | -flagfile)
        if (($# < 2)); then
          echo "${FLAGS_SH_NAME:-launch}: --flagfile with no file name" >&2
          return 2
        fi
        _flags_file "$(_flags_tilde "$2")" || return 2
        shift ;;
      --)
        _flags_args+=("$@")
        return 0 ;;
      *)
        _flags_args+=("$1") ;;
    esac
    shift
  done
}

# flag_value NAME ARGS...: prints the value of --NAME in ARGS, flagfiles included (see the top of this file).
flag_value() {
  local name=$1 value="" i
  shift
  _flags_expand "$@" || return 2
  for ((i = 0; i < ${#_flags_args[@]}; i++)); do
    case "${_flags_args[i]}" in
      --) break ;;
      "--$name="* | "-$name="*) value=${_flags_args[i]#*=} ;;
      "--$name" | "-$name") value=${_flags_args[i + 1]:-}; i=$((i + 1)) ;;
    esac
  done
  printf '%s' "$value"
}
