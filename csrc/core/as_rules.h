/*
 * as_rules.h — the multisteer rule compiler: rules -> per-behaviour truth tables.
 *
 * A rule reads `if <expr> then B<k>` (multisteer; docs/semantics.md). Grammar, keywords and
 * operands case-insensitive, words separated by white space or parentheses:
 *
 *     rule    := 'if' expr 'then' B<k>
 *     expr    := term { 'or' term }
 *     term    := factor { 'and' factor }
 *     factor  := 'not' factor | '(' expr ')' | C<j>
 *
 * so `not` binds tighter than `and`, which binds tighter than `or`
 * ("if C1 or C2 and not C3 then B1" is C1 or (C2 and (not C3))). C<j> and B<k>
 * are 1-based: C1..C<n_conditions>, B1..B<n_behaviors>.
 *
 * Output: one truth table per behaviour over condition bitmasks,
 *
 *     tables[n_behaviors, 1 << n_conditions] (uint8, 0/1),
 *     tables[k][m] = 1  iff some rule targeting B<k+1> holds when condition C<j+1>
 *                        is met exactly for the bits j set in m,
 *
 * i.e. behaviour k is on for a row whose condition state is m iff
 * tables[k][m]. A behaviour no rule targets has an all-zero table. The steering
 * op indexes these tables with each row's condition bitmask on the device.
 *
 * Errors: a malformed rule, or one naming a C/B that does not exist, returns
 * AS_ERR_PARSE (syntax) or AS_ERR_RANGE (C0/B0, or an index beyond the counts)
 * and fills the error record: argument "rules", index = which rule, position =
 * the CHARACTER offset of the offending token inside that rule, message = "is
 * malformed at character N: <what>. Rules read ..." (the binding prefixes
 * rules[i] and the quoted rule and draws a caret under the token). Nothing
 * is ever silently false. n_conditions > AS_MAX_CONDITIONS (as_core.h) (the tables would
 * be too large), a negative count or NO rule at all (nothing could switch a behaviour
 * on) is AS_ERR_INVALID_ARG. Nesting deeper than
 * AS_RULES_MAX_DEPTH (parentheses and `not` chains) is AS_ERR_PARSE.
 *
 * Cost: O(total rule length) to parse, O(n_rules * 2^n_conditions * rule length)
 * to tabulate. No global state; safe from several threads.
 */
#ifndef AS_RULES_H
#define AS_RULES_H
#include "as_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AS_RULES_MAX_DEPTH 64

/* Compile `n_rules` rules (rules[i] is rule_lengths[i] bytes of UTF-8, not
 * necessarily NUL-terminated) into tables[n_behaviors, 1 << n_conditions].
 * 0 <= n_conditions <= AS_MAX_CONDITIONS (as_core.h), n_behaviors >= 1, n_rules >= 0.
 * `err` may be NULL. tables is written only on AS_OK. */
as_status as_rules_compile(const char *const *rules, const int64_t *rule_lengths, int64_t n_rules,
                           int64_t n_conditions, int64_t n_behaviors, uint8_t *tables, as_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* AS_RULES_H */
