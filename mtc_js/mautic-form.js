/*!
 * contact-monitor form script: what Mautic's /media/js/mautic-form.js does for forms rendered
 * with Mautic's markup (GET /form/generate.js?id=N, GET /form/N, GraphQL Form.html):
 *
 * - on submit, required fields are checked in the page (the field's "This is required." shows
 *   next to it, nothing is sent);
 * - the form is posted into a hidden iframe with mauticform[messenger]=1 (multipart, as the form
 *   says), the button shows "Please wait..." meanwhile;
 * - the server's answer page hands the JSON to this page with postMessage: the success message
 *   is shown in #mauticform_<name>_message and the form is reset, a redirect is followed, the
 *   validation errors are shown next to their fields, any other error in #mauticform_<name>_error.
 *
 * window.MauticSDK.onLoad() binds the forms on the page (again after new ones were added);
 * it runs by itself once the page is loaded. window.MauticDomain, when a page sets it, names
 * the server; otherwise it is where this script came from. Readable on purpose: no build step.
 */
(function (window, document) {
    'use strict';

    var script = document.currentScript;
    var server = window.MauticDomain || (script ? new URL(script.src, window.location.href).origin : '');
    var origin = new URL(server || window.location.href, window.location.href).origin;
    var lang = window.MauticLang || {};
    var SUBMITTING = lang.submittingMessage || 'Please wait...';
    var SDK = window.MauticSDK = window.MauticSDK || {};

    function byId(id) {
        return document.getElementById(id);
    }

    function rowsOf(form) {
        return form.querySelectorAll('.mauticform-row');
    }

    function showFieldError(row, message) {
        row.className += row.className.indexOf('mauticform-has-error') === -1 ? ' mauticform-has-error' : '';
        var holder = row.querySelector('.mauticform-errormsg');
        if (holder) {
            if (message) {
                holder.textContent = message;
            }
            holder.style.display = '';
        }
    }

    function clearErrors(form, name) {
        var rows = rowsOf(form);
        for (var i = 0; i < rows.length; i++) {
            rows[i].className = rows[i].className.replace(/\s*mauticform-has-error/g, '');
            var holder = rows[i].querySelector('.mauticform-errormsg');
            if (holder) {
                holder.style.display = 'none';
            }
        }
        var error = byId('mauticform_' + name + '_error');
        if (error) {
            error.textContent = '';
        }
        var message = byId('mauticform_' + name + '_message');
        if (message) {
            message.textContent = '';
        }
    }

    // Required fields must hold something (and an email input an email): checked before sending.
    function valid(form) {
        var ok = true;
        var rows = form.querySelectorAll('.mauticform-required');
        for (var i = 0; i < rows.length; i++) {
            var input = rows[i].querySelector('input, textarea, select');
            if (!input) {
                continue;
            }
            var empty = !String(input.value || '').trim();
            var invalid = input.type === 'email' && input.validity && !input.validity.valid;
            if (empty || invalid) {
                showFieldError(rows[i], empty ? null : 'Please enter a valid email address.');
                ok = false;
            }
        }
        return ok;
    }

    function button(form) {
        return form.querySelector('button[type="submit"], input[type="submit"]');
    }

    function hidden(form, key, value) {
        var input = form.querySelector('input[name="' + key + '"]');
        if (!input) {
            input = document.createElement('input');
            input.type = 'hidden';
            input.name = key;
            form.appendChild(input);
        }
        input.value = value;
    }

    function frameFor(name) {
        var id = 'mauticiframe_' + name;
        var frame = byId(id);
        if (!frame) {
            frame = document.createElement('iframe');
            frame.id = id;
            frame.name = id;
            frame.title = 'form answer';
            frame.style.display = 'none';
            document.body.appendChild(frame);
        }
        return frame;
    }

    function bind(form) {
        if (form.getAttribute('data-mautic-bound')) {
            return;
        }
        form.setAttribute('data-mautic-bound', '1');
        var name = form.getAttribute('data-mautic-form');
        form.addEventListener('submit', function (event) {
            clearErrors(form, name);
            if (!valid(form)) {
                event.preventDefault();
                return;
            }
            form.target = frameFor(name).name;
            hidden(form, 'mauticform[messenger]', '1');
            var returnInput = byId('mauticform_' + name + '_return');
            if (returnInput && !returnInput.value) {
                returnInput.value = window.location.href;
            }
            var submit = button(form);
            if (submit) {
                submit.setAttribute('data-mautic-label', submit.textContent);
                submit.textContent = SUBMITTING;
                submit.disabled = true;
            }
        });
    }

    function answered(data) {
        var name = data.formName;
        var form = name && document.querySelector('form[data-mautic-form="' + name + '"]');
        if (!form) {
            return;
        }
        var submit = button(form);
        if (submit) {
            submit.textContent = submit.getAttribute('data-mautic-label') || submit.textContent;
            submit.disabled = false;
        }
        if (data.success) {
            if (data.redirect) {
                window.top.location.href = data.redirect;
                return;
            }
            var message = byId('mauticform_' + name + '_message');
            if (message) {
                message.textContent = data.successMessage || '';
            }
            form.reset();
            return;
        }
        if (data.validationErrors) {
            for (var field in data.validationErrors) {
                if (Object.prototype.hasOwnProperty.call(data.validationErrors, field)) {
                    var row = byId('mauticform_' + name + '_' + field);
                    if (row) {
                        showFieldError(row, data.validationErrors[field]);
                    }
                }
            }
        }
        if (data.errorMessage) {
            var error = byId('mauticform_' + name + '_error');
            if (error) {
                error.textContent = data.errorMessage;
            }
        }
    }

    // The answer page posts the JSON answer as a string; only this server's count.
    window.addEventListener('message', function (event) {
        if (event.origin !== origin || typeof event.data !== 'string') {
            return;
        }
        var data;
        try {
            data = JSON.parse(event.data);
        } catch (e) {
            return;
        }
        if (data && typeof data === 'object') {
            answered(data);
        }
    });

    SDK.onLoad = function () {
        var forms = document.querySelectorAll('form[data-mautic-form]');
        for (var i = 0; i < forms.length; i++) {
            bind(forms[i]);
        }
    };

    if (document.readyState === 'loading') {
        document.addEventListener('DOMContentLoaded', SDK.onLoad);
    } else {
        SDK.onLoad();
    }
})(window, document);
