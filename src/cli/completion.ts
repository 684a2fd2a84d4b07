import { singleQuote } from '../util/shell.ts';
// Shell completion scripts for bash and zsh, generated from what oclif's manifest says about the
// commands (ids, aliases, topics, flags, their choices). Pure: `banger completion SHELL` prints
// the script (commands/completion.ts). Both shells share one walker, written in the subset of
// shell both run the same way (positional parameters, no arrays, no word splitting): it reads
// the words typed so far and prints the candidates for the last one, or ::files:: for a path.

export interface CompletionFlag {
  name: string;
  type: 'boolean' | 'option';
  char?: string | undefined;
  options?: readonly string[] | undefined;
  allowNo?: boolean | undefined;
  hidden?: boolean | undefined;
}

export interface CompletionCommand {
  id: string;
  summary?: string | undefined;
  aliases?: readonly string[] | undefined;
  hidden?: boolean | undefined;
  flags: Record<string, CompletionFlag>;
}

export interface CompletionTopic {
  name: string;
  description?: string | undefined;
  hidden?: boolean | undefined;
}

/** Flags every position accepts: before any command (hoisted, see argv.ts), and everywhere. */
const ROOT_FLAGS: CompletionFlag[] = [
  { name: 'socket', type: 'option' },
  { name: 'json', type: 'boolean' },
  { name: 'version', type: 'boolean' },
  { name: 'help', type: 'boolean' },
];

/** A summary in one table field: no newline, no field separator. */
const oneLine = (s: string | undefined): string => (s ?? '').replace(/\s+/g, ' ').replaceAll('|', '/').trim();

/**
 * The table the walker reads, one entry a line, fields separated by "|" (not a tab: the shells
 * merge adjacent tabs when splitting, and the top level's id is empty):
 * `c ID SUMMARY` for a command or topic (ids with spaces: `vm create`), and
 * `f ID --NAME b|v CHOICES` for a flag (b: boolean, v: takes a value; CHOICES space-separated).
 */
export function completionTable(
  commands: readonly CompletionCommand[],
  topics: readonly CompletionTopic[],
): string {
  const lines: string[] = [];
  const ids = new Map<string, string>();
  const flagLines = (id: string, flags: Iterable<CompletionFlag>): void => {
    const seen = new Set<string>();
    for (const f of flags) {
      if (f.hidden || seen.has(f.name)) continue;
      seen.add(f.name);
      const kind = f.type === 'boolean' ? 'b' : 'v';
      lines.push(`f|${id}|--${f.name}|${kind}|${(f.options ?? []).join(' ')}`);
      if (f.type === 'boolean' && f.allowNo) lines.push(`f|${id}|--no-${f.name}|b|`);
      if (f.char) lines.push(`f|${id}|-${f.char}|${kind}|${(f.options ?? []).join(' ')}`);
    }
  };
  for (const t of topics) if (!t.hidden) ids.set(t.name.replaceAll(':', ' '), oneLine(t.description));
  const visible = commands.filter((c) => !c.hidden);
  for (const c of visible) {
    for (const id of [c.id, ...(c.aliases ?? [])].map((i) => i.replaceAll(':', ' '))) {
      ids.set(id, oneLine(c.summary));
      // A command's parents are topics even when the manifest names no such topic.
      for (let cut = id.lastIndexOf(' '); cut > 0; cut = id.lastIndexOf(' ', cut - 1)) {
        if (!ids.has(id.slice(0, cut))) ids.set(id.slice(0, cut), '');
      }
    }
  }
  for (const [id, summary] of [...ids].sort(([a], [b]) => a.localeCompare(b)))
    lines.push(`c|${id}|${summary}`);
  flagLines('', ROOT_FLAGS);
  for (const c of visible) {
    const flags = [...Object.values(c.flags), { name: 'help', type: 'boolean' } as const];
    for (const id of [c.id, ...(c.aliases ?? [])]) flagLines(id.replaceAll(':', ' '), flags);
  }
  return lines.join('\n');
}

/** The walker, shared by both scripts (see the file comment for the shell subset it keeps to). */
const WALKER = String.raw`
# The words after "banger", the last one being completed: prints the candidates for it, one a
# line, or ::files:: when it is a path.
_banger_candidates() {
  local _bc_cmd='' _bc_w _bc_next _bc_vflag='' _bc_cur _bc_k _bc_id _bc_name _bc_kind _bc_choices _bc_seen='
' _bc_rest
  while [ $# -gt 1 ]; do
    _bc_w=$1
    shift
    if [ -n "$_bc_vflag" ]; then _bc_vflag=''; continue; fi
    case $_bc_w in
      --) return 0 ;;
      -*=*) ;;
      -*) if _banger_flag_kind "$_bc_cmd" "$_bc_w" v; then _bc_vflag=$_bc_w; fi ;;
      *)
        _bc_next=$_bc_w
        [ -n "$_bc_cmd" ] && _bc_next="$_bc_cmd $_bc_w"
        case $_banger_ids in *"
$_bc_next
"*) _bc_cmd=$_bc_next ;; esac ;;
    esac
  done
  _bc_cur=$1
  # The value of a flag: its choices, else a path.
  case $_bc_cur in
    --*=*)
      _bc_vflag=${'$'}{_bc_cur%%=*}
      _bc_cur=${'$'}{_bc_cur#*=} ;;
  esac
  if [ -n "$_bc_vflag" ]; then
    _bc_choices=$(_banger_flag_choices "$_bc_cmd" "$_bc_vflag")
    if [ -z "$_bc_choices" ]; then echo '::files::'; return 0; fi
    _bc_rest="$_bc_choices "
    while [ -n "$_bc_rest" ]; do
      _bc_w=${'$'}{_bc_rest%% *}
      _bc_rest=${'$'}{_bc_rest#* }
      case $_bc_w in "$_bc_cur"*) printf '%s\n' "$_bc_w" ;; esac
    done
    return 0
  fi
  case $_bc_cur in
    -*)
      while IFS="|" read -r _bc_k _bc_id _bc_name _bc_kind _bc_choices; do
        [ "$_bc_k" = f ] && [ "$_bc_id" = "$_bc_cmd" ] || continue
        case $_bc_name in --*) ;; *) continue ;; esac
        case $_bc_name in "$_bc_cur"*) printf '%s\n' "$_bc_name" ;; esac
      done <<EOF
$_banger_table
EOF
      return 0 ;;
  esac
  # The next word of a command id under the one typed so far.
  while IFS="|" read -r _bc_k _bc_id _bc_name; do
    [ "$_bc_k" = c ] || continue
    if [ -n "$_bc_cmd" ]; then
      case $_bc_id in "$_bc_cmd "*) _bc_id=${'$'}{_bc_id#"$_bc_cmd "} ;; *) continue ;; esac
    fi
    _bc_w=${'$'}{_bc_id%% *}
    case $_bc_w in "$_bc_cur"*) ;; *) continue ;; esac
    case $_bc_seen in *"
$_bc_w
"*) continue ;; esac
    _bc_seen="$_bc_seen$_bc_w
"
    printf '%s\n' "$_bc_w"
  done <<EOF
$_banger_table
EOF
}

# Whether flag $2 of command $1 is of kind $3 (b or v).
_banger_flag_kind() {
  local _bf_k _bf_id _bf_name _bf_kind _bf_rest
  while IFS='|' read -r _bf_k _bf_id _bf_name _bf_kind _bf_rest; do
    [ "$_bf_k" = f ] && [ "$_bf_id" = "$1" ] && [ "$_bf_name" = "$2" ] && [ "$_bf_kind" = "$3" ] && return 0
  done <<EOF
$_banger_table
EOF
  return 1
}

# The choices of flag $2 of command $1, space-separated.
_banger_flag_choices() {
  local _bf_k _bf_id _bf_name _bf_kind _bf_choices
  while IFS='|' read -r _bf_k _bf_id _bf_name _bf_kind _bf_choices; do
    if [ "$_bf_k" = f ] && [ "$_bf_id" = "$1" ] && [ "$_bf_name" = "$2" ]; then
      printf '%s' "$_bf_choices"
      return 0
    fi
  done <<EOF
$_banger_table
EOF
}
`;

function quoteTable(table: string): string {
  // Single-quoted in the script: a quote in a summary becomes '\''.
  return singleQuote(table);
}

/** Every command and topic id, one a line, with a newline before and after (for `case`). */
function idList(table: string): string {
  const ids = table
    .split('\n')
    .filter((l) => l.startsWith('c|'))
    .map((l) => l.split('|')[1]!);
  return `'\n${ids.join('\n')}\n'`;
}

export function bashCompletion(table: string, bin = 'banger'): string {
  return `# ${bin} completion for bash. Load it with: source <(${bin} completion bash)
# (or save it as ~/.local/share/bash-completion/completions/${bin}).
# Generated from the CLI's command manifest; regenerate after an upgrade.
_banger_table=${quoteTable(table)}
_banger_ids=${idList(table)}
${WALKER}
_banger_complete() {
  local cur=\${COMP_WORDS[COMP_CWORD]} line i w
  local -a words=() out=()
  # bash splits "--flag=value" at "=" (COMP_WORDBREAKS): join it again for the walker.
  for ((i = 1; i <= COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if [[ \${#words[@]} -gt 0 && ( $w == = || \${COMP_WORDS[i - 1]} == = ) ]]; then
      words[-1]+=$w
    else
      words+=("$w")
    fi
  done
  [[ $cur == = ]] && cur=''
  while IFS= read -r line; do
    [[ -n $line ]] && out+=("$line")
  done < <(_banger_candidates "\${words[@]}")
  COMPREPLY=()
  if [[ \${out[0]:-} == ::files:: ]]; then
    [[ \${words[-1]} == --*=* ]] && cur=\${words[-1]#*=}
    while IFS= read -r line; do COMPREPLY+=("$line"); done < <(compgen -f -- "$cur")
  else
    COMPREPLY=("\${out[@]}")
  fi
}
complete -F _banger_complete ${bin}
`;
}

export function zshCompletion(table: string, bin = 'banger'): string {
  return `#compdef ${bin}
# ${bin} completion for zsh. Load it with: source <(${bin} completion zsh)
# (or save it as _${bin} in a directory of your $fpath, before compinit runs).
# Generated from the CLI's command manifest; regenerate after an upgrade.
_banger_table=${quoteTable(table)}
_banger_ids=${idList(table)}
${WALKER}
_banger() {
  local -a out
  out=("\${(@f)$(_banger_candidates "\${(@)words[2,CURRENT]}")}")
  out=(\${out:#})
  if [[ \${out[1]:-} == ::files:: ]]; then
    if [[ \${words[CURRENT]} == --*=* ]]; then
      compset -P '*='
    fi
    _files
    return
  fi
  (( \${#out} )) || return 1
  if [[ \${words[CURRENT]} == --*=* ]]; then
    compset -P '*='
  fi
  compadd -- "\${out[@]}"
}
if [[ \${zsh_eval_context[-1]:-} == loadautofunc ]]; then
  _banger "$@"
else
  (( \${+functions[compdef]} )) || { autoload -Uz compinit && compinit; }
  compdef _banger ${bin}
fi
`;
}
