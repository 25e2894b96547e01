from http import HTTPStatus

from tests.conftest import expect


async def test_healthz(client):
    await expect(await client.get("/healthz"), HTTPStatus.OK)


async def test_create_and_get_template(client, make_template, merchant):
    created = await make_template()
    body = await expect(
        await client.get(
            f"/api/v1/shops/s1/admin/coupon-templates/{created['id']}", headers=merchant
        ),
        HTTPStatus.OK,
    )
    assert body["name"] == "满299减50"
    assert body["remaining"] == 1000
