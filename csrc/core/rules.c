/* rules.c — multisteer rule parser and truth-table compiler. See as_rules.h.
 *
 * Each rule is parsed by recursive descent into postfix code (C<j> pushes bit j,
 * NOT/AND/OR pop and push), then the code is run once per condition bitmask.
 * The code of one rule has at most one instruction per token, and every token is
 * at least one byte, so `length` bounds both the code and the evaluation stack.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_core.h"

enum { OP_COND = 0, OP_NOT = 1, OP_AND = 2, OP_OR = 3 };

typedef struct {
    int32_t op;
    int32_t arg; /* OP_COND: 0-based condition index */
} instr_t;

typedef enum { TOK_END, TOK_LPAREN, TOK_RPAREN, TOK_WORD, TOK_BAD } tok_kind;

typedef struct {
    const char *s;
    int64_t n, pos;       /* rule text, its length, the scan position            */
    tok_kind kind;        /* current token                                       */
    int64_t start, len;   /* its byte span                                       */
    instr_t *code;        /* postfix output (capacity n)                         */
    int64_t n_code;
    int64_t n_conditions;
    int depth;
    struct {              /* the first error, turned into an as_error_t at the end */
        int64_t offset;   /* byte offset of the offending token                   */
        int64_t number;   /* the j of C<j> / k of B<k> for range errors           */
        char kind;        /* 'C' or 'B' for range errors, else 0                  */
        const char *message;
    } e;
} parser_t;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static void next_token(parser_t *p) {
    while (p->pos < p->n && is_space(p->s[p->pos])) p->pos++;
    p->start = p->pos;
    p->len = 0;
    if (p->pos >= p->n) { p->kind = TOK_END; return; }
    char c = p->s[p->pos];
    if (c == '(' || c == ')') {
        p->kind = c == '(' ? TOK_LPAREN : TOK_RPAREN;
        p->len = 1;
        p->pos++;
        return;
    }
    if (!is_word(c)) { p->kind = TOK_BAD; p->len = 1; return; }
    while (p->pos < p->n && is_word(p->s[p->pos])) p->pos++;
    p->kind = TOK_WORD;
    p->len = p->pos - p->start;
}

/* Is the current token the keyword `kw` (lower case)? */
static int is_kw(const parser_t *p, const char *kw) {
    if (p->kind != TOK_WORD || (int64_t)strlen(kw) != p->len) return 0;
    for (int64_t i = 0; i < p->len; i++)
        if (lower(p->s[p->start + i]) != kw[i]) return 0;
    return 1;
}

static as_status fail(parser_t *p, as_status st, int64_t offset, const char *message) {
    p->e.offset = offset;
    p->e.message = message;
    return st;
}

/* The current token as `letter`<number> (1-based). Returns AS_OK with *number set,
 * or an error describing what is wrong (not such a word at all -> `expected`). */
static as_status read_ref(parser_t *p, char letter, int64_t count, const char *expected, int64_t *number) {
    if (p->kind == TOK_BAD) return fail(p, AS_ERR_PARSE, p->start, "unexpected character");
    if (p->kind != TOK_WORD || lower(p->s[p->start]) != lower(letter) || p->len < 2)
        return fail(p, AS_ERR_PARSE, p->start, expected);
    int64_t v = 0;
    for (int64_t i = 1; i < p->len; i++) {
        char c = p->s[p->start + i];
        if (c < '0' || c > '9') return fail(p, AS_ERR_PARSE, p->start, expected);
        if (v < 1000000000) v = v * 10 + (c - '0'); /* saturate: anything this big is out of range */
    }
    p->e.kind = letter;
    p->e.number = v;
    if (v < 1) return fail(p, AS_ERR_RANGE, p->start, letter == 'C' ? "conditions are numbered from C1" : "behaviours are numbered from B1");
    if (v > count)
        return fail(p, AS_ERR_RANGE, p->start,
                    letter == 'C' ? "names a condition that was not given" : "names a behaviour that was not given");
    p->e.kind = 0;
    p->e.number = 0;
    *number = v;
    return AS_OK;
}

static void emit(parser_t *p, int32_t op, int32_t arg) {
    p->code[p->n_code].op = op;
    p->code[p->n_code].arg = arg;
    p->n_code++;
}

static as_status parse_expr(parser_t *p);

static as_status parse_factor(parser_t *p) {
    if (++p->depth > AS_RULES_MAX_DEPTH) return fail(p, AS_ERR_PARSE, p->start, "nested too deeply");
    as_status st = AS_OK;
    if (is_kw(p, "not")) {
        next_token(p);
        st = parse_factor(p);
        if (st == AS_OK) emit(p, OP_NOT, 0);
    } else if (p->kind == TOK_LPAREN) {
        int64_t open = p->start;
        next_token(p);
        st = parse_expr(p);
        if (st == AS_OK) {
            if (p->kind != TOK_RPAREN) {
                st = fail(p, AS_ERR_PARSE, p->kind == TOK_END ? open : p->start,
                          p->kind == TOK_END ? "'(' is never closed" : "expected ')'");
            } else {
                next_token(p);
            }
        }
    } else {
        int64_t j = 0;
        st = read_ref(p, 'C', p->n_conditions, "expected a condition C<j>, 'not' or '('", &j);
        if (st == AS_OK) {
            emit(p, OP_COND, (int32_t)(j - 1));
            next_token(p);
        }
    }
    p->depth--;
    return st;
}

static as_status parse_term(parser_t *p) {
    as_status st = parse_factor(p);
    while (st == AS_OK && is_kw(p, "and")) {
        next_token(p);
        st = parse_factor(p);
        if (st == AS_OK) emit(p, OP_AND, 0);
    }
    return st;
}

static as_status parse_expr(parser_t *p) {
    as_status st = parse_term(p);
    while (st == AS_OK && is_kw(p, "or")) {
        next_token(p);
        st = parse_term(p);
        if (st == AS_OK) emit(p, OP_OR, 0);
    }
    return st;
}

/* Parse one rule into p->code; *target = 0-based behaviour index. */
static as_status parse_rule(parser_t *p, int64_t n_behaviors, int64_t *target) {
    next_token(p);
    if (!is_kw(p, "if")) return fail(p, AS_ERR_PARSE, p->start, "a rule must start with 'if'");
    next_token(p);
    as_status st = parse_expr(p);
    if (st != AS_OK) return st;
    if (!is_kw(p, "then")) {
        if (p->kind == TOK_RPAREN) return fail(p, AS_ERR_PARSE, p->start, "')' without a matching '('");
        if (p->kind == TOK_BAD) return fail(p, AS_ERR_PARSE, p->start, "unexpected character");
        return fail(p, AS_ERR_PARSE, p->start, "expected 'and', 'or' or 'then'");
    }
    next_token(p);
    int64_t k = 0;
    st = read_ref(p, 'B', n_behaviors, "expected a behaviour B<k> after 'then'", &k);
    if (st != AS_OK) return st;
    next_token(p);
    if (p->kind != TOK_END) return fail(p, AS_ERR_PARSE, p->start, "unexpected text after the behaviour");
    *target = k - 1;
    return AS_OK;
}

static int run(const instr_t *code, int64_t n_code, uint32_t mask, uint8_t *stack) {
    int64_t top = 0;
    for (int64_t i = 0; i < n_code; i++) {
        switch (code[i].op) {
        case OP_COND: stack[top++] = (uint8_t)((mask >> code[i].arg) & 1u); break;
        case OP_NOT: stack[top - 1] = (uint8_t)!stack[top - 1]; break;
        case OP_AND: top--; stack[top - 1] = (uint8_t)(stack[top - 1] & stack[top]); break;
        default: top--; stack[top - 1] = (uint8_t)(stack[top - 1] | stack[top]); break;
        }
    }
    return stack[0];
}

/* The error record of a failed rule: where (in characters), what, and the grammar. */
static as_status rule_error(as_error_t *err, as_status st, const parser_t *p, int64_t r, int64_t n_conditions,
                            int64_t n_behaviors) {
    if (!err) return st;
    int64_t chars = 0; /* byte offset -> character offset (count UTF-8 lead bytes) */
    for (int64_t i = 0; i < p->e.offset && i < p->n; i++)
        if (((unsigned char)p->s[i] & 0xC0) != 0x80) chars++;
    char detail[200];
    if (p->e.kind == 'C' || p->e.kind == 'B') {
        const int is_c = p->e.kind == 'C';
        const long long count = (long long)(is_c ? n_conditions : n_behaviors), num = (long long)p->e.number;
        const char *noun = is_c ? "condition" : "behaviour";
        if (count == 0)
            snprintf(detail, sizeof detail, "%c%lld names a %s but none were given", p->e.kind, num, noun);
        else if (num < 1)
            snprintf(detail, sizeof detail, "%c%lld is not a %s: they are numbered from 1 (%c1..%c%lld)", p->e.kind,
                     num, noun, p->e.kind, p->e.kind, count);
        else
            snprintf(detail, sizeof detail, "it names %c%lld but only %lld %s(s) were given (%c1..%c%lld)", p->e.kind,
                     num, count, noun, p->e.kind, p->e.kind, count);
    } else {
        snprintf(detail, sizeof detail, "%s", p->e.message ? p->e.message : "malformed rule");
    }
    as_error_set(err, st, "rules", r, -1, p->e.message,
                 "is malformed at character %lld: %s. Rules read 'if <expr> then B<k>' where <expr> combines C<j> "
                 "with and/or/not and parentheses.",
                 (long long)chars, detail);
    err->position = chars;
    return st;
}

as_status as_rules_compile(const char *const *rules, const int64_t *rule_lengths, int64_t n_rules,
                           int64_t n_conditions, int64_t n_behaviors, uint8_t *tables, as_error_t *err) {
    if (n_conditions < 0 || n_conditions > AS_MAX_CONDITIONS)
        return as_error_set(err, AS_ERR_INVALID_ARG, "condition_vectors", -1, -1, "too many conditions",
                            "rules support at most %d conditions, got %lld", AS_MAX_CONDITIONS,
                            (long long)n_conditions);
    if (n_behaviors < 1)
        return as_error_set(err, AS_ERR_INVALID_ARG, "behavior_vectors", -1, -1, "no behaviour",
                            "rules need at least one behaviour, got %lld", (long long)n_behaviors);
    if (n_rules < 0 || !tables || (n_rules > 0 && (!rules || !rule_lengths)))
        return as_error_set(err, AS_ERR_INVALID_ARG, "rules", -1, -1, "invalid sizes or pointers", NULL);
    if (n_rules == 0) /* no rule switches any behaviour on: steering would silently do nothing */
        return as_error_set(err, AS_ERR_INVALID_ARG, "rules", -1, -1, "no rules",
                            "rules is empty: give at least one rule, e.g. 'if C1 then B1'");
    const int64_t n_masks = (int64_t)1 << n_conditions;
    int64_t max_len = 1;
    for (int64_t r = 0; r < n_rules; r++) {
        if (!rules[r] || rule_lengths[r] < 0)
            return as_error_set(err, AS_ERR_INVALID_ARG, "rules", r, -1, "invalid rule pointer or length", NULL);
        if (rule_lengths[r] > max_len) max_len = rule_lengths[r];
    }
    /* Work in a private table so that `tables` is written only on success. */
    uint8_t *work = calloc((size_t)(n_behaviors * n_masks), 1);
    instr_t *code = malloc((size_t)max_len * sizeof(instr_t));
    uint8_t *stack = malloc((size_t)max_len);
    as_status st = AS_OK;
    if (!work || !code || !stack) {
        st = as_error_set(err, AS_ERR_NOMEM, "rules", -1, -1, "out of memory", NULL);
        goto done;
    }

    for (int64_t r = 0; r < n_rules; r++) {
        parser_t p;
        memset(&p, 0, sizeof p);
        p.s = rules[r];
        p.n = rule_lengths[r];
        p.code = code;
        p.n_conditions = n_conditions;
        int64_t target = 0;
        st = parse_rule(&p, n_behaviors, &target);
        if (st != AS_OK) {
            rule_error(err, st, &p, r, n_conditions, n_behaviors);
            goto done;
        }
        uint8_t *row = work + target * n_masks;
        for (int64_t m = 0; m < n_masks; m++)
            if (!row[m] && run(code, p.n_code, (uint32_t)m, stack)) row[m] = 1;
    }
    memcpy(tables, work, (size_t)(n_behaviors * n_masks));
done:
    free(work);
    free(code);
    free(stack);
    return st;
}
