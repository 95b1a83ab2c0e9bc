/*
 * docs/configuration.md must document every knob of the config table
 * (config_print_table()) in the table of its section, with its type and
 * default, and must not document knobs that do not exist.
 *
 * Layout checked: a "## [section]" heading per section, then table rows
 * "| `name` | type | `default` | help |" (an empty default is "*(empty)*").
 */
#include "lib/config.h"
#include "lib/xalloc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct knob_row {
	char section[64], name[64], type[32], def[128];
};

static char *doc_text;
static struct knob_row *knobs;
static size_t nknobs;

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		buf = xgrow(buf, &cap, len + n + 1, 1);
		memcpy(buf + len, chunk, n);
		len += n;
		buf[len] = '\0';
	}
	fclose(f);
	return buf != NULL ? buf : xstrdup("");
}

static int setup(void **state)
{
	(void)state;
	const char *src = getenv("POSTERN_SOURCE_DIR");
	if (src == NULL)
		src = ".";
	char *path = xasprintf("%s/docs/configuration.md", src);
	doc_text = read_file(path);
	if (doc_text == NULL)
		fprintf(stderr, "cannot read %s (set POSTERN_SOURCE_DIR)\n", path);
	free(path);

	char *table = NULL;
	size_t size = 0;
	FILE *mem = open_memstream(&table, &size);
	config_print_table(mem);
	fclose(mem);
	size_t cap = 0;
	for (char *line = strtok(table, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		char *f[4] = {line, NULL, NULL, NULL};
		for (int i = 1; i < 4; i++) {
			f[i] = f[i - 1] ? strchr(f[i - 1], '\t') : NULL;
			if (f[i] != NULL)
				*f[i]++ = '\0';
		}
		char *dot = strchr(f[0], '.');
		if (dot == NULL || f[3] == NULL)
			continue;
		*dot = '\0';
		knobs = xgrow(knobs, &cap, nknobs + 1, sizeof(*knobs));
		struct knob_row *k = &knobs[nknobs++];
		snprintf(k->section, sizeof(k->section), "%s", f[0]);
		snprintf(k->name, sizeof(k->name), "%s", dot + 1);
		snprintf(k->type, sizeof(k->type), "%s", f[1]);
		snprintf(k->def, sizeof(k->def), "%s", f[2]);
	}
	free(table);
	return doc_text != NULL && nknobs > 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(doc_text);
	free(knobs);
	return 0;
}

/* The text of the "## [section]" part of the document, up to the next "## ". */
static char *section_text(const char *section)
{
	char *head = xasprintf("\n## [%s]\n", section);
	const char *start = strstr(doc_text, head);
	free(head);
	if (start == NULL)
		return NULL;
	start++;
	const char *end = strstr(start + 3, "\n## ");
	return end ? xstrndup(start, (size_t)(end - start)) : xstrdup(start);
}

/* The table row documenting `name` in `text`, or NULL. */
static char *find_row(const char *text, const char *name)
{
	char *key = xasprintf("\n| `%s` |", name);
	const char *row = strstr(text, key);
	free(key);
	if (row == NULL)
		return NULL;
	row++;
	const char *eol = strchr(row, '\n');
	return eol ? xstrndup(row, (size_t)(eol - row)) : xstrdup(row);
}

/* Split a table row into trimmed cells; returns the count (at most max). */
static int row_cells(char *row, char **cells, int max)
{
	int n = 0;
	char *p = strchr(row, '|');
	while (p != NULL && n < max) {
		char *next = strchr(p + 1, '|');
		if (next == NULL)
			break;
		*next = '\0';
		char *c = p + 1;
		while (*c == ' ')
			c++;
		size_t l = strlen(c);
		while (l > 0 && c[l - 1] == ' ')
			c[--l] = '\0';
		cells[n++] = c;
		p = next;
	}
	return n;
}

static void test_every_knob_documented(void **state)
{
	(void)state;
	for (size_t i = 0; i < nknobs; i++) {
		const struct knob_row *k = &knobs[i];
		char *text = section_text(k->section);
		if (text == NULL)
			fail_msg("docs/configuration.md has no \"## [%s]\" section", k->section);
		char *row = find_row(text, k->name);
		if (row == NULL)
			fail_msg("docs/configuration.md: [%s] %s is not documented", k->section,
				 k->name);
		char *cells[4];
		int n = row_cells(row, cells, 4);
		if (n < 4)
			fail_msg("[%s] %s: row needs 4 cells (name, type, default, help)",
				 k->section, k->name);
		if (strcmp(cells[1], k->type) != 0)
			fail_msg("[%s] %s: documented type \"%s\", the table says \"%s\"",
				 k->section, k->name, cells[1], k->type);
		char *want = k->def[0] ? xasprintf("`%s`", k->def) : xstrdup("*(empty)*");
		if (strcmp(cells[2], want) != 0)
			fail_msg("[%s] %s: documented default \"%s\", expected \"%s\"", k->section,
				 k->name, cells[2], want);
		if (cells[3][0] == '\0')
			fail_msg("[%s] %s: no description", k->section, k->name);
		free(want);
		free(row);
		free(text);
	}
}

static bool knob_exists(const char *section, const char *name)
{
	for (size_t i = 0; i < nknobs; i++)
		if (strcmp(knobs[i].section, section) == 0 && strcmp(knobs[i].name, name) == 0)
			return true;
	return false;
}

static void test_no_stale_knobs(void **state)
{
	(void)state;
	char section[64] = "";
	char *copy = xstrdup(doc_text);
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "## ", 3) == 0) {
			section[0] = '\0';
			if (line[3] == '[') {
				char *end = strchr(line, ']');
				if (end != NULL && (size_t)(end - line - 4) < sizeof(section))
					snprintf(section, sizeof(section), "%.*s",
						 (int)(end - line - 4), line + 4);
			}
			continue;
		}
		if (section[0] == '\0' || strncmp(line, "| `", 3) != 0)
			continue;
		char *end = strchr(line + 3, '`');
		if (end == NULL)
			continue;
		*end = '\0';
		if (!knob_exists(section, line + 3))
			fail_msg("docs/configuration.md documents [%s] %s, which does not exist",
				 section, line + 3);
	}
	free(copy);
}

static void test_doc_explains_syntax(void **state)
{
	(void)state;
	static const char *const must[] = {"POSTERN_CONFIG", "/etc/postern/postern.conf",
					   "postern config check", "data_dir"};
	for (size_t i = 0; i < ARRAY_SIZE(must); i++)
		if (strstr(doc_text, must[i]) == NULL)
			fail_msg("docs/configuration.md does not mention %s", must[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_knob_documented),
		cmocka_unit_test(test_no_stale_knobs),
		cmocka_unit_test(test_doc_explains_syntax),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
