/*
 * test_evstream.c - unit tests of the event-stream encoder (src/evstream.c).
 *
 * Each frame is compared byte for byte with what the WHATWG event stream
 * format requires, and decoded back with a small reference parser written
 * from the spec's "interpret the event stream" steps (here, not in src/),
 * so that the round trip data -> frame -> dispatched data is checked:
 * every line break (CRLF, CR, LF) becomes LF, a leading space survives,
 * and nothing in the data can start a field of its own (an "id:" or
 * "event:" inside the data stays data). Field checks: CR, LF and invalid
 * UTF-8 are refused in names and ids; invalid UTF-8 in data. Sizes are
 * checked against what is written for every case.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evstream.h"

/* Frames one event into a malloc'd, NUL-terminated string and checks the
 * size promise. */
static char *frame(const char *event, const char *id, const char *data,
                   size_t len)
{
    size_t n = latch__evs_event_size(event, id, data, len);
    char *out = malloc(n + 1);

    assert_non_null(out);
    assert_int_equal(latch__evs_event(out, event, id, data, len), n);
    out[n] = '\0';
    return out;
}

/* A reference decoder of one event stream (WHATWG steps): returns the
 * number of events dispatched; the last one's fields are copied out. */
typedef struct decoded {
    int events;
    char event[600], id[600], data[600];
} decoded;

static void decode(const char *s, size_t n, decoded *d)
{
    char data[600] = "", event[600] = "", line[512];
    size_t dlen = 0, i = 0, ll;

    memset(d, 0, sizeof(*d));
    while (i < n) {
        const char *colon, *val;
        char field[600];
        ll = 0;
        while (i < n && s[i] != '\r' && s[i] != '\n')
            line[ll++] = s[i++];
        line[ll] = '\0';
        if (i < n && s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
            i += 2;
        else
            i++;
        if (ll == 0) { /* dispatch */
            if (dlen == 0) {
                event[0] = '\0';
                continue;
            }
            if (data[dlen - 1] == '\n')
                data[--dlen] = '\0';
            d->events++;
            snprintf(d->data, sizeof(d->data), "%s", data);
            snprintf(d->event, sizeof(d->event), "%s",
                     event[0] ? event : "message");
            dlen = 0;
            data[0] = event[0] = '\0';
            continue;
        }
        if (line[0] == ':')
            continue;
        colon = strchr(line, ':');
        if (colon == NULL) {
            snprintf(field, sizeof(field), "%s", line);
            val = "";
        } else {
            snprintf(field, sizeof(field), "%.*s", (int)(colon - line), line);
            val = colon + 1;
            if (*val == ' ')
                val++;
        }
        if (strcmp(field, "data") == 0) {
            dlen +=
                (size_t)snprintf(data + dlen, sizeof(data) - dlen, "%s\n", val);
        } else if (strcmp(field, "event") == 0) {
            snprintf(event, sizeof(event), "%s", val);
        } else if (strcmp(field, "id") == 0) {
            snprintf(d->id, sizeof(d->id), "%s", val);
        }
    }
}

static void test_plain_event(void **state)
{
    char *f = frame("tick", "7", "hello", 5);

    (void)state;
    assert_string_equal(f, "event: tick\nid: 7\ndata: hello\n\n");
    free(f);
    f = frame(NULL, NULL, "x", 1);
    assert_string_equal(f, "data: x\n\n");
    free(f);
    f = frame(NULL, "3", NULL, 0);
    assert_string_equal(f, "id: 3\n\n");
    free(f);
    f = frame(NULL, NULL, "", 0);
    assert_string_equal(f, "data: \n\n");
    free(f);
}

static void test_every_line_break_splits(void **state)
{
    const char d[] = "a\r\nb\rc\nd";
    char *f = frame(NULL, NULL, d, sizeof(d) - 1);
    decoded dec;

    (void)state;
    assert_string_equal(f, "data: a\ndata: b\ndata: c\ndata: d\n\n");
    decode(f, strlen(f), &dec);
    assert_int_equal(dec.events, 1);
    assert_string_equal(dec.data, "a\nb\nc\nd");
    free(f);
    /* A lone CR at the end and CR CR are two breaks each; CRLF one. */
    f = frame(NULL, NULL, "x\r\r\n", 4);
    assert_string_equal(f, "data: x\ndata: \ndata: \n\n");
    decode(f, strlen(f), &dec);
    assert_string_equal(dec.data, "x\n\n");
    free(f);
}

static void test_no_field_injection(void **state)
{
    const char d[] = "ok\nid: 999\nevent: evil\n\ndata: more";
    char *f = frame("good", "1", d, sizeof(d) - 1);
    decoded dec;

    (void)state;
    decode(f, strlen(f), &dec);
    assert_int_equal(dec.events, 1);
    assert_string_equal(dec.event, "good");
    assert_string_equal(dec.id, "1");
    assert_string_equal(dec.data, d);
    free(f);
}

static void test_leading_space_and_colon_survive(void **state)
{
    char *f = frame(NULL, NULL, "  two: spaces", 13);
    decoded dec;

    (void)state;
    assert_string_equal(f, "data:   two: spaces\n\n");
    decode(f, strlen(f), &dec);
    assert_string_equal(dec.data, "  two: spaces");
    free(f);
}

static void test_utf8_passes_through(void **state)
{
    const char d[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    char *f = frame("\xc3\xa9v", NULL, d, sizeof(d) - 1);

    (void)state;
    assert_int_equal(latch__evs_check_data(d, sizeof(d) - 1), 0);
    assert_int_equal(latch__evs_check_field("\xc3\xa9v"), 0);
    assert_non_null(strstr(f, d));
    free(f);
}

static void test_field_checks(void **state)
{
    (void)state;
    assert_int_equal(latch__evs_check_field("a\nb"), LATCH_ERR_INVALID_CHAR);
    assert_int_equal(latch__evs_check_field("a\rb"), LATCH_ERR_INVALID_CHAR);
    assert_int_equal(latch__evs_check_field("\xff"), LATCH_ERR_INVALID_CHAR);
    assert_int_equal(latch__evs_check_field("\xc0\xaf"),
                     LATCH_ERR_INVALID_CHAR); /* overlong '/' */
    assert_int_equal(latch__evs_check_field("\xed\xa0\x80"),
                     LATCH_ERR_INVALID_CHAR); /* a surrogate */
    assert_int_equal(latch__evs_check_field(""), 0);
    assert_int_equal(latch__evs_check_field("a b:c"), 0);
    assert_int_equal(latch__evs_check_data("a\0b\nc", 5), 0);
    assert_int_equal(latch__evs_check_data("\xe2\x82", 2),
                     LATCH_ERR_INVALID_CHAR); /* cut sequence */
}

static void test_comment_and_retry(void **state)
{
    char out[64];
    size_t n;

    (void)state;
    n = latch__evs_comment(out, "");
    assert_int_equal(n, latch__evs_comment_size(""));
    assert_memory_equal(out, ":\n\n", 3);
    n = latch__evs_comment(out, "hi\nthere");
    assert_int_equal(n, latch__evs_comment_size("hi\nthere"));
    out[n] = '\0';
    assert_string_equal(out, ": hi\n: there\n\n");
    n = latch__evs_retry(out, 2500);
    out[n] = '\0';
    assert_string_equal(out, "retry: 2500\n\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_event),
        cmocka_unit_test(test_every_line_break_splits),
        cmocka_unit_test(test_no_field_injection),
        cmocka_unit_test(test_leading_space_and_colon_survive),
        cmocka_unit_test(test_utf8_passes_through),
        cmocka_unit_test(test_field_checks),
        cmocka_unit_test(test_comment_and_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
